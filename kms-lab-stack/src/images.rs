//! Container images of the stack's binaries. kube-apiserver and etcd come from
//! `registry.k8s.io` (or the mirror `KMS_LAB_REGISTRY` names) at the pinned version where the
//! registry answers (`KMS_LAB_IMAGES`:
//! `auto`, the default, tries it once per process and falls back; `registry` requires it; `local`
//! never asks). Every other image, and those two when the registry does not answer, is built offline: `FROM scratch` plus the binary
//! (the Go-built kube-apiserver, etcd, kubectl and etcdctl are static) and the shared
//! libraries `ldd` lists for a dynamically linked one (kms-lab's own Rust binaries). Tagged
//! `localhost/kms-lab/<binary>:<version>-<hash>` (the hash is the binary's and its libraries'
//! SHA-256, so a rebuilt binary gets a new image) and cached: an image that exists is not rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use testcontainers::GenericBuildableImage;
use testcontainers::core::BuildImageOptions;
use testcontainers::runners::AsyncBuilder;

use crate::error::StackError;

/// The repository prefix of every image kms-lab builds.
pub const REPOSITORY_PREFIX: &str = "localhost/kms-lab";
/// The label every image and container kms-lab creates carries (value `true`).
pub const MANAGED_LABEL: &str = "org.kms-lab.managed";
/// Where the binary sits inside its image.
pub const BINARY_DIR: &str = "/usr/local/bin";

/// An image reference, `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The repository, e.g. `localhost/kms-lab/etcd`.
    pub name: String,
    /// The tag, e.g. `v3.6.16-1f2e3d4c5b6a`.
    pub tag: String,
}

impl std::str::FromStr for ImageRef {
    type Err = String;

    /// Parses `name:tag` (`localhost/my-plugin:1.2.0`, `ghcr.io/org/plugin:v1`); a digest or a
    /// missing tag is refused with the expected form (`latest` is never assumed).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let last_segment = text.rsplit('/').next().unwrap_or(text);
        match last_segment.rsplit_once(':') {
            Some((_, tag)) if !tag.is_empty() && !text.contains('@') => {
                let name = &text[..text.len() - tag.len() - 1];
                Ok(Self { name: name.to_owned(), tag: tag.to_owned() })
            }
            _ => Err(format!(
                "`{text}` is not an image `NAME:TAG` (e.g. `localhost/my-plugin:1.2.0`; name the tag, `latest` is not assumed)"
            )),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// What goes into one image: the binary and the shared libraries it loads, with their hash.
#[derive(Debug, Clone)]
struct Contents {
    binary: PathBuf,
    file_name: String,
    libraries: Vec<PathBuf>,
    hash: String,
}

/// Hashes already computed in this process, by (path, size, mtime): a restart does not rehash.
/// A binary as (path, size, mtime).
type BinaryKey = (PathBuf, u64, SystemTime);
static CONTENTS: Mutex<Option<HashMap<BinaryKey, Contents>>> = Mutex::new(None);
/// One build at a time per process (two plugins starting at once share one image).
static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> StackError {
    StackError::io(what)
}

/// The shared libraries `ldd` lists for `binary` (the dynamic loader included); none for a static one.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, StackError> {
    let output = std::process::Command::new("ldd").arg(binary).output().map_err(|source| StackError::Spawn {
        component: "ldd".into(),
        program: "ldd".into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`;
    // `linux-vdso.so.1 (0x…)` is the kernel's and has no file.
    let mut libraries = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

fn contents(binary: &Path) -> Result<Contents, StackError> {
    let meta = std::fs::metadata(binary).map_err(io_error(format!("read {}", binary.display())))?;
    let key = (binary.to_owned(), meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
    if let Some(found) = CONTENTS.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).get(&key) {
        return Ok(found.clone());
    }
    let libraries = shared_libraries(binary)?;
    let mut hasher = Sha256::new();
    for file in std::iter::once(binary).chain(libraries.iter().map(PathBuf::as_path)) {
        let mut reader = std::fs::File::open(file).map_err(io_error(format!("read {}", file.display())))?;
        hasher.update(file.as_os_str().as_encoded_bytes());
        std::io::copy(&mut reader, &mut hasher).map_err(io_error(format!("read {}", file.display())))?;
    }
    let hash: String = hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let file_name = binary.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_else(|| "binary".into());
    let found = Contents { binary: binary.to_owned(), file_name, libraries, hash };
    CONTENTS.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).insert(key, found.clone());
    Ok(found)
}

/// Where images come from (`KMS_LAB_IMAGES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSource {
    /// Upstream images where the registry answers, else built offline (the default).
    Auto,
    /// Upstream images only: a registry that does not answer is an error.
    Registry,
    /// Built offline only.
    Local,
}

impl ImageSource {
    /// The choice in `KMS_LAB_IMAGES` (unset: `auto`).
    pub fn from_env() -> Result<Self, StackError> {
        match std::env::var("KMS_LAB_IMAGES").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("auto") => Ok(Self::Auto),
            Ok("registry") => Ok(Self::Registry),
            Ok("local") => Ok(Self::Local),
            Ok(other) => Err(StackError::Container(format!("KMS_LAB_IMAGES=`{other}` is not a choice (known: auto, registry, local)"))),
        }
    }
}

/// Kubernetes' own registry, where the upstream images come from unless [`REGISTRY_ENV`] names a mirror.
pub const UPSTREAM_REGISTRY: &str = "registry.k8s.io";
/// The variable naming a mirror of [`UPSTREAM_REGISTRY`] (`HOST:PORT`, as air-gapped clusters
/// configure one), e.g. `127.0.0.1:5000`.
pub const REGISTRY_ENV: &str = "KMS_LAB_REGISTRY";

/// The registry upstream images are pulled from: `$KMS_LAB_REGISTRY`, else `registry.k8s.io`.
pub fn upstream_registry() -> String {
    std::env::var(REGISTRY_ENV)
        .ok()
        .map(|r| r.trim().trim_end_matches('/').to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| UPSTREAM_REGISTRY.to_owned())
}

/// The upstream image of a binary kms-lab provisions, at `version`, in `registry` (upstream's or
/// a mirror): `(image, entrypoint)`. The kube-apiserver image has no entrypoint (static pods name
/// the command); etcd's tag has no `v` and a `-0` build suffix.
pub fn upstream_image(registry: &str, file_name: &str, version: &str) -> Option<(ImageRef, String)> {
    match file_name {
        "kube-apiserver" => {
            Some((ImageRef { name: format!("{registry}/kube-apiserver"), tag: version.to_owned() }, "/usr/local/bin/kube-apiserver".into()))
        }
        "etcd" => Some((
            ImageRef { name: format!("{registry}/etcd"), tag: format!("{}-0", version.trim_start_matches('v')) },
            "/usr/local/bin/etcd".into(),
        )),
        _ => None,
    }
}

/// Whether the registry answered in this process (asked once: a registry that does not answer
/// costs one timeout per run, not one per container).
static REGISTRY: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
/// How long one pull may take before the registry counts as not answering.
const PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Pulls `image` (a first pull of kube-apiserver is ~30 MB).
async fn pull(docker: &testcontainers::bollard::Docker, image: &ImageRef) -> Result<(), String> {
    use futures::StreamExt;
    let options =
        testcontainers::bollard::query_parameters::CreateImageOptionsBuilder::default().from_image(&image.name).tag(&image.tag).build();
    let pulling = async {
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(PULL_TIMEOUT, pulling).await.map_err(|_| format!("no answer within {} s", PULL_TIMEOUT.as_secs()))?
}

/// The upstream image of `binary` when the source allows it and the registry answers: `Ok(None)`
/// means "build it offline".
pub async fn from_registry(
    docker: &testcontainers::bollard::Docker,
    binary: &Path,
    version: &str,
) -> Result<Option<(ImageRef, String)>, StackError> {
    let source = ImageSource::from_env()?;
    let file_name = binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some((image, entrypoint)) = upstream_image(&upstream_registry(), &file_name, version).filter(|_| source != ImageSource::Local)
    else {
        return Ok(None);
    };
    if docker.inspect_image(&image.to_string()).await.is_ok() {
        return Ok(Some((image, entrypoint)));
    }
    let answered = REGISTRY.get_or_init(|| async { pull(docker, &image).await }).await.clone();
    // The first pull tells whether the registry answers; later images are pulled on their own.
    let pulled = match answered {
        Ok(()) if docker.inspect_image(&image.to_string()).await.is_ok() => Ok(()),
        Ok(()) => pull(docker, &image).await,
        Err(why) => Err(why),
    };
    match (pulled, source) {
        (Ok(()), _) => {
            tracing::info!(image = %image, "using the upstream image");
            Ok(Some((image, entrypoint)))
        }
        (Err(why), ImageSource::Registry) => Err(StackError::Container(format!(
            "cannot pull `{image}` ({why}) and KMS_LAB_IMAGES=registry: make the registry reachable, or unset KMS_LAB_IMAGES to build images offline"
        ))),
        (Err(why), _) => {
            tracing::info!(image = %image, reason = %why, "registry not reachable; building the image offline");
            Ok(None)
        }
    }
}

/// The Dockerfile of an image whose build context holds `rootfs/` (the files at their paths).
fn dockerfile(file_name: &str, version: &str) -> String {
    format!(
        "FROM scratch\nCOPY rootfs/ /\nLABEL {MANAGED_LABEL}=true org.kms-lab.binary={file_name} org.kms-lab.version={version}\nSTOPSIGNAL SIGTERM\nENTRYPOINT [\"{BINARY_DIR}/{file_name}\"]\n"
    )
}

/// The image of `binary` at `version`: found in the local image store, or built now.
pub async fn ensure(docker: &testcontainers::bollard::Docker, binary: &Path, version: &str) -> Result<ImageRef, StackError> {
    let path = binary.to_owned();
    let found = tokio::task::spawn_blocking(move || contents(&path))
        .await
        .map_err(|e| StackError::Container(format!("hashing {} stopped: {e}", binary.display())))??;
    let version: String = version.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let image = ImageRef { name: format!("{REPOSITORY_PREFIX}/{}", found.file_name), tag: format!("{version}-{}", found.hash) };
    let _one_build = BUILD.lock().await;
    if docker.inspect_image(&image.to_string()).await.is_ok() {
        return Ok(image);
    }
    tracing::info!(image = %image, binary = %binary.display(), libraries = found.libraries.len(), "building the image");
    let started = std::time::Instant::now();
    let relative = |path: &Path| format!("rootfs{}", path.display());
    let mut build = GenericBuildableImage::new(&image.name, &image.tag)
        .with_dockerfile_string(dockerfile(&found.file_name, &version))
        .with_file(&found.binary, format!("rootfs{BINARY_DIR}/{}", found.file_name));
    for library in &found.libraries {
        build = build.with_file(library, relative(library));
    }
    let _built = build.build_image_with(BuildImageOptions::new().with_skip_if_exists(true)).await.map_err(|e| {
        StackError::Container(format!(
            "cannot build image `{image}` from {}: {e} (is dockerd running and `docker build` working? `--runtime process` needs no Docker)",
            binary.display()
        ))
    })?;
    tracing::info!(image = %image, seconds = started.elapsed().as_secs_f64(), "image built");
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_need_a_tag() {
        let parsed: ImageRef = "localhost:5000/org/plugin:v1.2".parse().unwrap();
        assert_eq!((parsed.name.as_str(), parsed.tag.as_str()), ("localhost:5000/org/plugin", "v1.2"));
        for bad in ["localhost:5000/org/plugin", "plugin", "plugin:", "plugin@sha256:abc"] {
            let error = bad.parse::<ImageRef>().unwrap_err();
            assert!(error.contains("NAME:TAG"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_dynamic_binary_lists_its_loader_and_libc_and_a_static_one_nothing() {
        let libraries = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libraries:?}");
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libraries:?}");
        assert!(libraries.iter().all(|l| l.is_absolute() && l.exists()), "{libraries:?}");
        assert!(shared_libraries(Path::new("/etc/hostname")).unwrap().is_empty());
    }

    #[test]
    fn upstream_images_use_the_registrys_tag_shapes() {
        let (apiserver, entry) = upstream_image(UPSTREAM_REGISTRY, "kube-apiserver", "v1.37.2").unwrap();
        assert_eq!(
            (apiserver.to_string().as_str(), entry.as_str()),
            ("registry.k8s.io/kube-apiserver:v1.37.2", "/usr/local/bin/kube-apiserver")
        );
        assert_eq!(upstream_image(UPSTREAM_REGISTRY, "etcd", "v3.6.16").unwrap().0.to_string(), "registry.k8s.io/etcd:3.6.16-0");
        assert!(upstream_image(UPSTREAM_REGISTRY, "kms-plugin", "0.1.0").is_none());
        let (mirrored, _) = upstream_image("127.0.0.1:5000", "kube-apiserver", "v1.37.2").unwrap();
        assert_eq!(mirrored.to_string(), "127.0.0.1:5000/kube-apiserver:v1.37.2");
    }

    #[test]
    fn the_dockerfile_starts_from_scratch_and_runs_the_binary() {
        let text = dockerfile("etcd", "v3.6.16");
        assert!(text.starts_with("FROM scratch\n"), "{text}");
        assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/etcd\"]"), "{text}");
        assert!(text.contains("org.kms-lab.managed=true"), "{text}");
    }
}

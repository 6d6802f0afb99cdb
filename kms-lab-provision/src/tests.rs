//! Lookup order (with fake binaries: small shell scripts printing a version) and the real
//! binaries end to end.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::lookup::cache_path;
use super::*;

/// Writes an executable script printing `output` at `dir/name`.
fn fake(dir: &Path, name: &str, output: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn env(vars: &[(&'static str, &Path)]) -> Env {
    Env {
        vars: vars.iter().map(|(k, v)| (*k, v.as_os_str().to_owned())).collect::<HashMap<_, _>>(),
        go: "/nonexistent/go-for-kms-lab-tests".into(),
    }
}

fn offline(bin_dir: Option<&Path>, cache: &Path) -> ProvisionOptions {
    ProvisionOptions {
        bin_dir: bin_dir.map(Path::to_path_buf),
        cache_dir: Some(cache.to_path_buf()),
        allow_build: false,
        progress: false,
        ..ProvisionOptions::default()
    }
}

const ETCD_OUTPUT: &str = "etcd Version: 3.6.16\nGit SHA: v3.6.16\nGo Version: go1.26.8";

#[test]
fn components() {
    let names: Vec<_> = Upstream::PROVISIONED.iter().map(|c| (c.name(), c.env_var())).collect();
    assert_eq!(
        names,
        [
            ("kube-apiserver", "KMS_LAB_KUBE_APISERVER"),
            ("kubectl", "KMS_LAB_KUBECTL"),
            ("etcd", "KMS_LAB_ETCD"),
            ("etcdctl", "KMS_LAB_ETCDCTL"),
        ]
    );
    let kcm = Upstream::KubeControllerManager;
    assert_eq!((kcm.name(), kcm.env_var()), ("kube-controller-manager", "KMS_LAB_KUBE_CONTROLLER_MANAGER"));
    let options = ProvisionOptions::default();
    assert_eq!(options.version_of(kcm), "v1.37.2");
    assert_eq!((options.version_of(Upstream::Kubectl), options.version_of(Upstream::Etcdctl)), ("v1.37.2", "v3.6.16"));
    assert!(options.allow_build && options.progress && options.bin_dir.is_none() && options.cache_dir.is_none());
    assert_eq!(cache_path(Path::new("/c"), Upstream::KubeApiserver, "v1.37.2"), Path::new("/c/bin/kube-apiserver-v1.37.2/kube-apiserver"));
}

#[test]
fn cache_dir_defaults() {
    let options = ProvisionOptions::default();
    assert_eq!(env(&[("HOME", Path::new("/h"))]).cache_dir(&options), Some(PathBuf::from("/h/.cache/kms-lab")));
    let both = env(&[("HOME", Path::new("/h")), ("KMS_LAB_CACHE", Path::new("/k"))]);
    assert_eq!(both.cache_dir(&options), Some(PathBuf::from("/k")));
    let explicit = ProvisionOptions { cache_dir: Some("/o".into()), ..ProvisionOptions::default() };
    assert_eq!(both.cache_dir(&explicit), Some(PathBuf::from("/o")));
    assert_eq!(env(&[]).cache_dir(&options), None);
    assert_eq!(env(&[("HOME", Path::new("/h"))]).tilde(Path::new("/h/.cache/kms-lab")), "~/.cache/kms-lab");
}

#[test]
fn lookup_order() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let from_var = fake(&root.join("var"), "my-etcd", ETCD_OUTPUT);
    let bin_dir = root.join("bin");
    fake(&bin_dir, "etcd", ETCD_OUTPUT);
    let kms_assets = root.join("kms-assets");
    fake(&kms_assets, "etcd", ETCD_OUTPUT);
    let kubebuilder_assets = root.join("kubebuilder-assets");
    fake(&kubebuilder_assets, "etcd", ETCD_OUTPUT);
    let cache = root.join("cache");
    let cached = cache_path(&cache, Upstream::Etcd, ETCD_VERSION);
    fake(cached.parent().unwrap(), "etcd", ETCD_OUTPUT);

    let find =
        |vars: &[(&'static str, &Path)], bin_dir: Option<&Path>| find_or_build_with(Upstream::Etcd, &offline(bin_dir, &cache), &env(vars));
    let all = [
        ("KMS_LAB_ETCD", from_var.as_path()),
        ("KMS_LAB_ASSETS", kms_assets.as_path()),
        ("KUBEBUILDER_ASSETS", kubebuilder_assets.as_path()),
    ];
    let expectations = [
        (Source::EnvVar("KMS_LAB_ETCD"), from_var.clone()),
        (Source::BinDir, bin_dir.join("etcd")),
        (Source::Assets("KMS_LAB_ASSETS"), kms_assets.join("etcd")),
        (Source::Assets("KUBEBUILDER_ASSETS"), kubebuilder_assets.join("etcd")),
        (Source::Cache, cached.clone()),
    ];
    // Remove the winning place one at a time: the next one wins.
    for (step, (source, path)) in expectations.into_iter().enumerate() {
        let vars: Vec<_> = all
            .iter()
            .copied()
            .filter(|(name, _)| match *name {
                "KMS_LAB_ETCD" => step < 1,
                "KMS_LAB_ASSETS" => step < 3,
                _ => step < 4,
            })
            .collect();
        let binary = find(&vars, (step < 2).then_some(bin_dir.as_path())).unwrap();
        assert_eq!((&binary.source, &binary.path), (&source, &path), "step {step}");
        assert_eq!((binary.component, binary.version.as_str()), (Upstream::Etcd, "v3.6.16"));
    }

    fs::remove_file(&cached).unwrap();
    let err = find(&[], None).unwrap_err();
    let ProvisionError::NotFound { component, version, tried } = &err else { panic!("{err}") };
    assert_eq!((*component, version.as_str()), (Upstream::Etcd, "v3.6.16"));
    let places: Vec<_> = tried.iter().map(|a| a.place.as_str()).collect();
    assert_eq!(
        places,
        [
            "$KMS_LAB_ETCD".to_owned(),
            "--bin-dir".to_owned(),
            "$KMS_LAB_ASSETS".to_owned(),
            "$KUBEBUILDER_ASSETS".to_owned(),
            format!("cache {}", cached.display()),
            format!("build with Go into {}", cache.display()),
        ]
    );
}

#[test]
fn the_error_lists_every_place_tried_and_why() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let bin_dir = root.join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    fs::write(bin_dir.join("etcd"), "not executable").unwrap();
    let kms_assets = root.join("kms-assets");
    fake(&kms_assets, "etcd", "Usage: etcd [flags]");
    let kubebuilder_assets = root.join("kubebuilder-assets");
    fs::create_dir_all(kubebuilder_assets.join("etcd")).unwrap();
    let cache = root.join("cache");
    let cached = cache_path(&cache, Upstream::Etcd, ETCD_VERSION);
    fake(cached.parent().unwrap(), "etcd", "etcd Version: 3.5.17");
    let missing = root.join("nowhere/etcd");
    let vars = [
        ("KMS_LAB_ETCD", missing.as_path()),
        ("KMS_LAB_ASSETS", kms_assets.as_path()),
        ("KUBEBUILDER_ASSETS", kubebuilder_assets.as_path()),
    ];

    let err = find_or_build_with(Upstream::Etcd, &offline(Some(&bin_dir), &cache), &env(&vars)).unwrap_err();
    let text = err.to_string();
    let expected_lines = [
        "no usable etcd v3.6.16; tried, in order:".to_owned(),
        format!("  1. $KMS_LAB_ETCD={}: no such file", missing.display()),
        format!("  2. --bin-dir {0}/etcd: not executable (chmod +x {0}/etcd)", bin_dir.display()),
        format!(
            "  3. $KMS_LAB_ASSETS {}/etcd: `etcd --version` printed no etcd version, but: \"Usage: etcd [flags]\"",
            kms_assets.display()
        ),
        format!("  4. $KUBEBUILDER_ASSETS {}/etcd: is a directory, not the etcd binary", kubebuilder_assets.display()),
        format!("  5. cache {}: reports v3.5.17, not v3.6.16; it will be rebuilt", cached.display()),
        format!("  6. build with Go into {}: not allowed (allow_build is false)", cache.display()),
        format!("fix: {FIX}"),
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected_lines, "{text}");

    // Allowed to build, but there is no Go: the last place says how to install it.
    let options = ProvisionOptions { allow_build: true, ..offline(Some(&bin_dir), &cache) };
    let err = find_or_build_with(Upstream::Etcd, &options, &env(&vars)).unwrap_err();
    let ProvisionError::NotFound { tried, .. } = &err else { panic!("{err}") };
    let last = tried.last().unwrap();
    assert_eq!(last.place, format!("build with Go into {}", cache.display()));
    assert!(last.skipped.contains("is not on PATH") && last.skipped.contains("apt-get install golang-go"), "{err}");
    assert_eq!(tried.len(), 6, "{err}");
}

#[test]
fn another_version_is_accepted_but_not_a_kube_apiserver_without_kms_v2() {
    let root = tempfile::tempdir().unwrap();
    let bin_dir = root.path().join("bin");
    fake(&bin_dir, "etcdctl", "etcdctl version: 3.5.17\nAPI version: 3.5");
    fake(&bin_dir, "kubectl", "Client Version: v1.36.3\nKustomize Version: v5.7.1");
    fake(&bin_dir, "kube-apiserver", "Kubernetes v1.28.4");
    let options = offline(Some(&bin_dir), &root.path().join("cache"));

    let etcdctl = find_or_build_with(Upstream::Etcdctl, &options, &env(&[])).unwrap();
    assert_eq!((etcdctl.version.as_str(), etcdctl.source), ("v3.5.17", Source::BinDir));
    let kubectl = find_or_build_with(Upstream::Kubectl, &options, &env(&[])).unwrap();
    assert_eq!(kubectl.version, "v1.36.3");

    let err = find_or_build_with(Upstream::KubeApiserver, &options, &env(&[])).unwrap_err();
    assert!(matches!(&err, ProvisionError::TooOld { found, .. } if found == "v1.28.4"), "{err}");
    let text = err.to_string();
    let path = bin_dir.join("kube-apiserver");
    assert!(text.contains(&format!("the kube-apiserver at {} (from --bin-dir) reports v1.28.4", path.display())), "{text}");
    assert!(text.contains("older than v1.29") && text.contains("fix: put a kube-apiserver v1.29 or later in"), "{text}");
}

#[test]
fn a_malformed_version_is_rejected_before_looking() {
    let options = ProvisionOptions { kubernetes_version: "1.37.2".into(), ..ProvisionOptions::default() };
    let err = provision_with(&options, &env(&[])).unwrap_err();
    assert!(matches!(err, ProvisionError::InvalidVersion { what: "Kubernetes", .. }), "{err}");
    assert!(err.to_string().contains("did you mean v1.37.2?"), "{err}");
    let options = ProvisionOptions { etcd_version: "latest".into(), ..ProvisionOptions::default() };
    let err = find_or_build_with(Upstream::Kubectl, &options, &env(&[])).unwrap_err();
    assert!(matches!(err, ProvisionError::InvalidVersion { what: "etcd", .. }), "{err}");
}

#[test]
fn a_build_waits_for_the_lock_and_then_uses_what_the_holder_built() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().to_path_buf();
    let lock = fs::File::create(cache.join(".lock")).unwrap();
    lock.lock().unwrap();

    let waiter = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            let options = ProvisionOptions { allow_build: true, ..offline(None, &cache) };
            let versions = Versions::parse(&options).unwrap();
            let env = env(&[]);
            gobuild::build(&gobuild::Build {
                component: Upstream::Etcd,
                versions: &versions,
                cache: &cache,
                env: &env,
                progress: false,
                tried: Vec::new(),
            })
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the build must wait for the lock");
    let cached = cache_path(&cache, Upstream::Etcd, ETCD_VERSION);
    fake(cached.parent().unwrap(), "etcd", ETCD_OUTPUT);
    drop(lock);
    let binary = waiter.join().unwrap().unwrap();
    assert_eq!((binary.source, binary.path), (Source::Cache, cached));
}

/// The real thing: finds (or, on the first run, builds: minutes) the four binaries in the
/// user's cache, and checks each reports the pinned version.
#[test]
fn provision_finds_the_real_binaries() {
    let options = ProvisionOptions::default();
    let binaries = provision(&options).unwrap_or_else(|e| panic!("{e}"));
    for (component, args, expected) in [
        (Upstream::KubeApiserver, &["--version"][..], "Kubernetes v1.37.2"),
        (Upstream::Kubectl, &["version", "--client"][..], "Client Version: v1.37.2"),
        (Upstream::Etcd, &["--version"][..], "etcd Version: 3.6.16"),
        (Upstream::Etcdctl, &["version"][..], "etcdctl version: 3.6.16"),
    ] {
        let binary = binaries.get(component).unwrap();
        assert_eq!(binary.component, component);
        assert_eq!(binary.version, options.version_of(component), "{binary:?}");
        assert!(binary.path.is_absolute(), "{binary:?}");
        let out = Command::new(&binary.path).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.lines().any(|l| l.trim() == expected), "{binary:?}: {stdout}");
    }
}

/// Containers from a registry's images: kube-apiserver and etcd are not looked for or built on
/// the host (Go is not even there); kubectl is used where found, and otherwise left to the step
/// that needs it, which provisions it then.
#[test]
fn with_pulled_images_nothing_is_built_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bin = dir.path().join("bin");
    fake(&bin, "kubectl", "Client Version: v1.37.2\nKustomize Version: v5.8.1");
    let options = ProvisionOptions { pulled_images: true, allow_build: true, ..offline(Some(&bin), &cache) };
    let binaries = provision_with(&options, &env(&[])).expect("nothing to build");
    let sources: Vec<_> = Upstream::PROVISIONED.iter().map(|c| (c.name(), binaries.get(*c).unwrap().source.clone())).collect();
    assert_eq!(
        sources,
        [("kube-apiserver", Source::Image), ("kubectl", Source::BinDir), ("etcd", Source::Image), ("etcdctl", Source::Image)]
    );
    assert_eq!((binaries.kube_apiserver.version.as_str(), binaries.etcd.version.as_str()), ("v1.37.2", "v3.6.16"));
    assert_eq!(binaries.etcd.path, Path::new("etcd"), "the bare name: the image is found by it");
    assert!(!cache.exists(), "nothing was built into the cache");
    // Found binaries are themselves on the host.
    assert_eq!(binaries.kubectl.on_host().unwrap().path, bin.join("kubectl"));
}

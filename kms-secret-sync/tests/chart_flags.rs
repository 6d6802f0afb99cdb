//! ack-secret-manager's chart starts its controller with `--name=value` flags (empty values
//! included, booleans as `=false`); the same command line starts kms-secret-sync, and what it
//! cannot take is refused naming the flag.

use std::process::Command;

/// The args of the chart's `templates/deployment.yaml` with its `values.yaml` defaults.
const CHART_ARGS: [&str; 10] = [
    "--token-rotation-period=120s",
    "--reconcile-period=5s",
    "--reconcile-count=1",
    "--polling-interval=120s",
    "--disable-polling=false",
    "--region=",
    "--kms-endpoint=",
    "--max-concurrent-kms-secret-pulls=10",
    "--max-concurrent-oos-secret-pulls=10",
    "--enable-worker-role=true",
];

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kms-secret-sync"))
        .arg("run")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("ACCESS_KEY_ID")
        .env_remove("SECRET_ACCESS_KEY")
        .output()
        .expect("kms-secret-sync runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_charts_command_line_is_accepted() {
    // Every flag parses; the run then stops at the first thing it lacks: a kubeconfig.
    let mut args = CHART_ARGS.to_vec();
    args.extend(["--watch-namespaces=app,web", "--exclude-namespaces=kube-system", "--kubeconfig=/nonexistent/kubeconfig"]);
    let (code, stderr) = run(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--kubeconfig /nonexistent/kubeconfig"), "{stderr}");
}

#[test]
fn a_flag_it_cannot_take_is_named() {
    for (bad, named) in [
        (&["--backend=vault"][..], "--backend"),
        (&["--disable-polling=maybe"], "--disable-polling"),
        (&["--polling-interval=2x"], "--polling-interval"),
    ] {
        let (code, stderr) = run(bad);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
        assert!(stderr.contains(named), "{bad:?}: {stderr}");
    }
    let (code, stderr) = {
        let out = Command::new(env!("CARGO_BIN_EXE_kms-secret-sync"))
            .args(["run", "--kubeconfig=/nonexistent/kubeconfig"])
            .env("ACCESS_KEY_ID", "reader")
            .env_remove("SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ACCESS_KEY_ID is set but SECRET_ACCESS_KEY is not"), "{stderr}");
}

//! `cargo xtask tidy`: the repository's hygiene gate, run first by `cargo xtask test`:
//! `cargo fmt --check`, `cargo clippy --workspace --all-targets` with warnings denied (the
//! workspace's `[workspace.lints]` make a public item without docs a warning in library crates),
//! and the README's crate table checked against the workspace's members.

use std::collections::BTreeSet;
use std::path::Path;

use xshell::{Shell, cmd};

use crate::outcome::{Failure, Outcome, Phase, delegate};

/// Options of `cargo xtask tidy`.
#[derive(Debug, clap::Args)]
pub struct TidyArgs {
    /// Rewrite the files rustfmt would change instead of failing on them.
    #[arg(long)]
    pub fix: bool,
}

/// Runs every check; the first that fails ends the task with its fix.
pub fn run(sh: &Shell, args: &TidyArgs) -> Outcome {
    let fmt = Phase::start(if args.fix { "cargo fmt --all" } else { "cargo fmt --all --check" });
    let formatted = if args.fix { delegate(cmd!(sh, "cargo fmt --all")) } else { delegate(cmd!(sh, "cargo fmt --all --check")) };
    fmt.end(
        formatted.map_err(|_| Failure::failed("rustfmt would change the files above: run `cargo xtask tidy --fix` (or `cargo fmt --all`)")),
    )?;
    let clippy = Phase::start("cargo clippy --workspace --all-targets -- -D warnings");
    clippy.end(delegate(cmd!(sh, "cargo clippy --workspace --all-targets --quiet -- -D warnings")).map_err(|_| {
        Failure::failed("clippy found the warnings above: fix each (or, where a lint is wrong for the code, allow it there with a reason)")
    }))?;
    let folders = Phase::start("each crate's folder is named as its package");
    folders.end(folders_are_package_names(sh))?;
    let table = Phase::start("the README's crate table against the workspace members");
    table.end(readme_lists_every_crate(sh))?;
    let features = Phase::start("one feature set for the binaries and the tests (workspace-hack/Cargo.toml)");
    features.end(one_feature_set(sh))?;
    let macros = Phase::start(
        "opt-level 0 in Cargo.toml for the compile-time crates (proc-macros, build-dependencies and what only they use) and those marked cold at run time",
    );
    macros.end(unoptimised_crates_are_compile_time_or_cold(sh))
}

/// The root manifest gives `opt-level = 0` exactly to the crates that run only at compile time:
/// the proc-macros and build-dependencies of the dependency graph (on this host) and the crates
/// only they use; and to the run-time crates whose section says `# cold at run time` (the lab
/// calls them a few times per run: Kubernetes' and Docker's API models, argument and YAML
/// parsers). Any other dependency keeps the `*` profile's opt-level 2 (tests push data through
/// them).
fn unoptimised_crates_are_compile_time_or_cold(sh: &Shell) -> Outcome {
    let host = cmd!(sh, "rustc -vV").quiet().read().map_err(|e| Failure::message(format!("rustc -vV failed: {e}")))?;
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap_or("x86_64-unknown-linux-gnu").to_owned();
    let metadata = cmd!(sh, "cargo metadata --format-version 1 --filter-platform {host}")
        .quiet()
        .read()
        .map_err(|e| Failure::message(format!("cargo metadata failed: {e}")))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).map_err(|e| Failure::message(format!("cargo metadata's JSON: {e}")))?;
    let problems = unoptimised_problems(
        &compile_time_only(&metadata),
        &package_names(&metadata),
        &unoptimised_in(&read(&sh.current_dir().join("Cargo.toml"))?),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(format!("Cargo.toml, the opt-level 0 sections: {}", problems.join("; "))))
    }
}

/// What is wrong with the opt-level 0 sections, given the compile-time crates (`wanted`) and
/// every package name in the tree.
fn unoptimised_problems(wanted: &BTreeSet<String>, in_tree: &BTreeSet<String>, listed: &Unoptimised) -> Vec<String> {
    let list = |names: Vec<&String>| names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    let missing: Vec<&String> = wanted.iter().filter(|name| !listed.compile_time.contains(*name) && !listed.cold.contains(*name)).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "compile-time crates built at opt-level 2: {} — add `[profile.dev.package.NAME]` `opt-level = 0` for each",
            list(missing)
        ));
    }
    let extra: Vec<&String> = listed.compile_time.difference(wanted).collect();
    if !extra.is_empty() {
        problems.push(format!(
            "crates at opt-level 0 that are not compile-time only (or no longer in the tree): {} — remove their sections, or, for a crate the lab calls only a few times per run, say `opt-level = 0  # cold at run time`",
            list(extra)
        ));
    }
    let cold_but_compile_time: Vec<&String> = listed.cold.intersection(wanted).collect();
    if !cold_but_compile_time.is_empty() {
        problems.push(format!("compile-time crates marked `# cold at run time`: {} — drop the note", list(cold_but_compile_time)));
    }
    let gone: Vec<&String> = listed.cold.difference(in_tree).collect();
    if !gone.is_empty() {
        problems.push(format!("crates marked `# cold at run time` that are no longer in the tree: {} — remove their sections", list(gone)));
    }
    problems
}

/// Every package name in `cargo metadata`'s tree.
fn package_names(metadata: &serde_json::Value) -> BTreeSet<String> {
    let packages = metadata.get("packages").and_then(|p| p.as_array()).map(Vec::as_slice).unwrap_or_default();
    packages.iter().filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(str::to_owned)).collect()
}

/// From `cargo metadata`, by name (a profile names a package, every version of it): the
/// proc-macro packages and build-dependencies that are not workspace members, and the packages
/// reachable from them through normal dependencies, less every name a workspace member reaches
/// at run time (through its normal or dev dependencies, not through a proc-macro or a build
/// script, both of which run at compile time).
fn compile_time_only(metadata: &serde_json::Value) -> BTreeSet<String> {
    use std::collections::{BTreeMap, HashSet};
    let empty = Vec::new();
    let array = |v: &serde_json::Value, key: &str| v.get(key).and_then(|a| a.as_array()).unwrap_or(&empty).clone();
    let text = |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).unwrap_or_default().to_owned();
    let members: HashSet<String> = array(metadata, "workspace_members").iter().filter_map(|m| m.as_str().map(str::to_owned)).collect();
    let names: BTreeMap<String, String> = array(metadata, "packages").iter().map(|p| (text(p, "id"), text(p, "name"))).collect();
    let proc_macros: HashSet<String> = array(metadata, "packages")
        .iter()
        .filter(|p| !members.contains(&text(p, "id")))
        .filter(|p| array(p, "targets").iter().any(|t| array(t, "kind").iter().any(|k| k.as_str() == Some("proc-macro"))))
        .map(|p| text(p, "id"))
        .collect();
    let resolve = metadata.get("resolve").cloned().unwrap_or_default();
    // Each node's dependencies as (package, kinds), kind "" for normal.
    let nodes: BTreeMap<String, Vec<(String, Vec<String>)>> = array(&resolve, "nodes")
        .iter()
        .map(|n| {
            let deps = array(n, "deps")
                .iter()
                .map(|d| (text(d, "pkg"), array(d, "dep_kinds").iter().map(|k| text(k, "kind")).collect()))
                .collect();
            (text(n, "id"), deps)
        })
        .collect();
    let walk = |starts: Vec<String>, follows: &dyn Fn(&str, &str) -> bool| {
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack = starts;
        while let Some(id) = stack.pop() {
            for (dep, kinds) in nodes.get(&id).unwrap_or(&Vec::new()) {
                if !proc_macros.contains(dep) && !seen.contains(dep) && kinds.iter().any(|k| follows(&id, k)) {
                    seen.insert(dep.clone());
                    stack.push(dep.clone());
                }
            }
        }
        seen
    };
    let build_dependencies = nodes
        .values()
        .flatten()
        .filter(|(dep, kinds)| !members.contains(dep) && kinds.iter().all(|k| k == "build"))
        .map(|(dep, _)| dep.clone());
    let compile_time: Vec<String> = proc_macros.iter().cloned().chain(build_dependencies).collect();
    let under_them = walk(compile_time.clone(), &|_, kind| kind.is_empty());
    let at_run_time = walk(members.iter().cloned().collect(), &|from, kind| kind.is_empty() || (kind == "dev" && members.contains(from)));
    let name = |id: &String| names.get(id).cloned();
    let run_time_names: HashSet<String> = at_run_time.iter().filter_map(name).collect();
    compile_time.iter().chain(&under_them).filter_map(name).filter(|n| !run_time_names.contains(n)).collect()
}

/// The packages the root manifest's `[profile.dev.package.NAME]` sections give `opt-level = 0`.
#[derive(Debug, Default, PartialEq)]
struct Unoptimised {
    /// Sections with a plain `opt-level = 0`: they must be the compile-time crates.
    compile_time: BTreeSet<String>,
    /// Sections with `opt-level = 0  # cold at run time`.
    cold: BTreeSet<String>,
}

fn unoptimised_in(manifest: &str) -> Unoptimised {
    let mut found = Unoptimised::default();
    let mut section: Option<&str> = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.strip_prefix("[profile.dev.package.").and_then(|rest| rest.strip_suffix(']')).map(|n| n.trim_matches('"'));
            continue;
        }
        let (setting, note) = line.split_once('#').unwrap_or((line, ""));
        if let Some(name) = section
            && setting.replace(' ', "") == "opt-level=0"
        {
            let kind = if note.trim() == "cold at run time" { &mut found.cold } else { &mut found.compile_time };
            kind.insert(name.to_owned());
        }
    }
    found
}

/// The features each shared dependency gets in a build of the binaries (`cargo build --workspace
/// --bins`) and in a build of the tests (`cargo test --workspace`, dev-dependencies too) agree;
/// else the suite compiles that crate, and everything above it, a second time.
fn one_feature_set(sh: &Shell) -> Outcome {
    let tree = |edges: &str| {
        let format = "{p} {f}";
        cmd!(sh, "cargo tree --workspace --edges {edges} --format {format} --prefix none --quiet")
            .quiet()
            .read()
            .map_err(|e| Failure::message(format!("cargo tree failed: {e}")))
    };
    let bins = feature_sets(&tree("normal,build")?);
    let tests = feature_sets(&tree("normal,build,dev")?);
    let drift: Vec<String> = bins
        .iter()
        .filter_map(|(package, sets)| {
            let in_tests = tests.get(package)?;
            (sets != in_tests).then(|| format!("{package}: binaries {{{}}}, tests {{{}}}", join(sets), join(in_tests)))
        })
        .collect();
    if drift.is_empty() {
        return Ok(());
    }
    Err(Failure::failed(format!(
        "dev-dependencies turn on features the binaries' build lacks, so the suite compiles these again:\n  {}\nadd the tests' features to workspace-hack/Cargo.toml ([dependencies], or [build-dependencies] for a build script's side)",
        drift.join("\n  ")
    )))
}

/// `package version` → the distinct feature lists `cargo tree` shows for it (a host and a target
/// copy may differ).
fn feature_sets(tree: &str) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut sets: std::collections::BTreeMap<String, BTreeSet<String>> = std::collections::BTreeMap::new();
    for line in tree.lines() {
        let line = line.trim_end_matches(" (*)").trim();
        let mut words = line.splitn(3, ' ');
        let (Some(name), Some(version)) = (words.next(), words.next()) else { continue };
        // A workspace member's line carries its path, `(/…)`, before the features.
        let rest = words.next().unwrap_or("");
        let features = if rest.starts_with('(') { rest.split_once(") ").map_or("", |(_, f)| f) } else { rest };
        sets.entry(format!("{name} {version}")).or_default().insert(features.trim().to_owned());
    }
    sets
}

fn join(sets: &BTreeSet<String>) -> String {
    sets.iter().map(|s| format!("[{s}]")).collect::<Vec<_>>().join(" ")
}

/// Each workspace member's folder is named as its package (`kms-lab-stack/` is `kms-lab-stack`),
/// so `cargo test -p NAME` and the tree agree.
fn folders_are_package_names(sh: &Shell) -> Outcome {
    let root = sh.current_dir();
    let members = workspace_members(&read(&root.join("Cargo.toml"))?);
    let mut misnamed = Vec::new();
    for folder in &members {
        let manifest = read(&root.join(folder).join("Cargo.toml"))?;
        match package_name(&manifest) {
            Some(name) if name == folder => {}
            Some(name) => misnamed.push(format!("`{folder}/` holds package `{name}`")),
            None => misnamed.push(format!("`{folder}/Cargo.toml` names no package")),
        }
    }
    if misnamed.is_empty() {
        return Ok(());
    }
    Err(Failure::failed(format!(
        "{}: rename the folder (`git mv`, then its path in the root Cargo.toml) or the package, so they agree",
        misnamed.join("; ")
    )))
}

/// The `name` of a manifest's `[package]` table.
fn package_name(manifest: &str) -> Option<&str> {
    let package = &manifest[manifest.find("[package]")?..];
    package.lines().skip(1).take_while(|l| !l.starts_with('[')).find_map(|l| {
        let value = l.trim().strip_prefix("name")?.trim_start().strip_prefix('=')?.trim();
        value.strip_prefix('"')?.strip_suffix('"')
    })
}

/// Every workspace member's folder has a row in the README's architecture table
/// (`| \`folder/\` …`), and every row names a folder that exists.
fn readme_lists_every_crate(sh: &Shell) -> Outcome {
    let root = sh.current_dir();
    let manifest = read(&root.join("Cargo.toml"))?;
    let members = workspace_members(&manifest);
    let readme = read(&root.join("README.md"))?;
    let listed = readme_crate_rows(&readme);
    let unlisted: Vec<&String> = members.difference(&listed).collect();
    let stale: Vec<&String> = listed.iter().filter(|f| !members.contains(*f) && !root.join(f).exists()).collect();
    if unlisted.is_empty() && stale.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if !unlisted.is_empty() {
        problems.push(format!("crates missing from the README's architecture table: {}", names(&unlisted)));
    }
    if !stale.is_empty() {
        problems.push(format!("README rows for folders that do not exist: {}", names(&stale)));
    }
    Err(Failure::failed(format!(
        "{} (README.md, section \"Architecture\": one row `| \\`folder/\\` | job |` per crate)",
        problems.join("; ")
    )))
}

fn names(folders: &[&String]) -> String {
    folders.iter().map(|f| format!("`{f}/`")).collect::<Vec<_>>().join(", ")
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::message(format!("cannot read {}: {e}", path.display())))
}

/// The `members = [...]` of the root manifest (folder names).
fn workspace_members(manifest: &str) -> BTreeSet<String> {
    let Some(start) = manifest.find("members = [") else { return BTreeSet::new() };
    let list = &manifest[start + "members = [".len()..];
    let list = &list[..list.find(']').unwrap_or(list.len())];
    list.split(',').map(|m| m.trim().trim_matches('"').to_owned()).filter(|m| !m.is_empty()).collect()
}

/// The folders of the README's crate rows: lines `| \`name/\` …` whose first cell is one folder.
fn readme_crate_rows(readme: &str) -> BTreeSet<String> {
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("/`"))
        .map(|(folder, _)| folder.to_owned())
        .filter(|folder| !folder.contains(' ') && !folder.contains('/'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_sets_are_read_per_package() {
        let tree = "libc v0.2.1 default,std\nlibc v0.2.1 default,extra_traits,std (*)\nkms-wire v0.1.0 (/w/kms-wire) clap\nfoo v1.0.0 \n";
        let sets = feature_sets(tree);
        assert_eq!(sets["libc v0.2.1"], ["default,extra_traits,std", "default,std"].map(String::from).into());
        assert_eq!(sets["kms-wire v0.1.0"], ["clap"].map(String::from).into());
        assert_eq!(sets["foo v1.0.0"], [String::new()].into());
    }

    #[test]
    fn members_and_rows_are_read_as_folders() {
        let manifest =
            "[workspace]\nresolver = \"3\"\nmembers = [\"kms-plugin\", \"kms-wire\",\n \"xtask\"]\ndefault-members = [\"kms-plugin\"]\n";
        assert_eq!(workspace_members(manifest), ["kms-plugin", "kms-wire", "xtask"].map(String::from).into());
        let readme =
            "| crate (folder) | job |\n|---|---|\n| `kms-wire/` | wire |\n| `kms-plugin/` | plugin |\n| `third_party/h2/` | patch |\n";
        assert_eq!(readme_crate_rows(readme), ["kms-plugin", "kms-wire"].map(String::from).into());
    }

    #[test]
    fn a_package_name_is_read_from_its_table_only() {
        let manifest = "[package]\nname = \"kms-lab-stack\"\nedition.workspace = true\n\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(manifest), Some("kms-lab-stack"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
        assert_eq!(package_name("[package]\nversion = \"1\"\n[lib]\nname = \"x\"\n"), None);
    }

    #[test]
    fn compile_time_crates_are_proc_macros_and_what_only_they_use() {
        let metadata = serde_json::json!({
            "workspace_members": ["ws"],
            "packages": [
                {"id": "ws", "name": "kms-lab", "targets": [{"kind": ["lib"]}]},
                {"id": "derive", "name": "serde_derive", "targets": [{"kind": ["proc-macro"]}]},
                {"id": "syn", "name": "syn", "targets": [{"kind": ["lib"]}]},
                {"id": "both", "name": "memchr", "targets": [{"kind": ["lib"]}]},
                {"id": "serde", "name": "serde", "targets": [{"kind": ["lib"]}]},
            ],
            "resolve": {"nodes": [
                {"id": "ws", "deps": [{"pkg": "serde", "dep_kinds": [{"kind": null}]}, {"pkg": "derive", "dep_kinds": [{"kind": null}]}, {"pkg": "syn", "dep_kinds": [{"kind": "build"}]}]},
                {"id": "serde", "deps": [{"pkg": "both", "dep_kinds": [{"kind": null}]}]},
                {"id": "derive", "deps": [{"pkg": "syn", "dep_kinds": [{"kind": null}]}, {"pkg": "both", "dep_kinds": [{"kind": null}]}]},
                {"id": "syn", "deps": []},
                {"id": "both", "deps": []},
            ]},
        });
        // memchr also runs under serde, at run time: it keeps opt-level 2; syn is also kms-lab's
        // build-dependency, which runs at compile time too.
        assert_eq!(compile_time_only(&metadata), ["serde_derive", "syn"].map(String::from).into());
        // A name with one version at run time and another under a macro keeps opt-level 2.
        let mut two_memchrs = metadata.clone();
        two_memchrs["packages"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"id": "memchr2", "name": "memchr", "targets": [{"kind": ["lib"]}]}));
        two_memchrs["resolve"]["nodes"][2]["deps"][1]["pkg"] = "memchr2".into();
        two_memchrs["resolve"]["nodes"].as_array_mut().unwrap().push(serde_json::json!({"id": "memchr2", "deps": []}));
        assert_eq!(compile_time_only(&two_memchrs), ["serde_derive", "syn"].map(String::from).into());
    }

    #[test]
    fn unoptimised_packages_are_read_from_their_profile_sections() {
        let manifest = "[profile.dev.package.\"*\"]\nopt-level = 2\n[profile.dev.package.syn]\nopt-level = 0\n[profile.dev.package.quote]\nopt-level=0\n[profile.release.package.x]\nopt-level = 0\n[profile.dev.package.k8s-openapi]\nopt-level = 0  # cold at run time\n";
        let read = unoptimised_in(manifest);
        assert_eq!(read.compile_time, ["quote", "syn"].map(String::from).into());
        assert_eq!(read.cold, ["k8s-openapi"].map(String::from).into());
    }

    #[test]
    fn each_opt_level_0_section_is_a_compile_time_crate_or_marked_cold_and_in_the_tree() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<String>>();
        let wanted = names(&["syn", "quote"]);
        let tree = names(&["syn", "quote", "serde", "k8s-openapi"]);
        let listed = |plain: &[&str], cold: &[&str]| Unoptimised { compile_time: names(plain), cold: names(cold) };
        assert!(unoptimised_problems(&wanted, &tree, &listed(&["syn", "quote"], &["k8s-openapi"])).is_empty());
        let problems = unoptimised_problems(&wanted, &tree, &listed(&["syn", "serde"], &["quote", "bollard"]));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("not compile-time only") && problems[0].contains("serde"), "{problems:?}");
        assert!(problems[1].contains("compile-time crates marked") && problems[1].contains("quote"), "{problems:?}");
        assert!(problems[2].contains("no longer in the tree: bollard"), "{problems:?}");
        let missing = unoptimised_problems(&wanted, &tree, &listed(&["syn"], &[]));
        assert!(missing[0].contains("built at opt-level 2: quote"), "{missing:?}");
    }
}

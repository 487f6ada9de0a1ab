//! The rooms of `src/` import downwards only (docs/design.md, "Module
//! map"): this test reads every source file and checks each room's
//! `crate::` paths against the rooms it may use.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The room a file belongs to: its directory under `src/`, or its file stem.
fn room_of(relative: &Path) -> String {
    let mut parts = relative.components();
    let first = parts
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The room a `crate::NAME` path reaches (public re-exports at the root
/// resolve to the room that defines them).
fn target_room(name: &str) -> Option<&'static str> {
    Some(match name {
        "types" | "BlobId" | "DiskPtr" | "Lid" | "Lsn" | "PageId" | "SegmentState" => "types",
        "error" | "Error" | "Result" | "Callback" | "ConfigError" => "error",
        "storage" | "Storage" | "LogFile" | "MemStorage" | "FileStorage" => "storage",
        "seeded" => "seeded",
        "trace" => "trace",
        "core" => "core",
        "cleaning" | "config" | "policy" | "placement" | "Config" | "ConfigBuilder" | "Mode"
        | "Tuning" | "CleaningPolicy" | "Relocation" | "Skip" => "cleaning",
        "recovery" | "format" | "scan" | "Snapshot" | "Fragment" | "PageState" | "RecoverError" => {
            "recovery"
        }
        "accountant" | "Accountant" | "introspect" | "metrics" | "Metrics" | "AuditError"
        | "SegmentInfo" | "Stats" => "accountant",
        "testing" | "model" | "baseline" | "fault" => "testing",
        "properties" | "guide" => "docs",
        // crossbeam-epoch re-exports and the like: not a room.
        _ => return None,
    })
}

fn allowed(room: &str) -> Option<BTreeSet<&'static str>> {
    let below: &[&str] = match room {
        "types" | "seeded" | "trace" | "properties" | "guide" => &[],
        "error" => &["types", "trace"],
        "storage" => &["types", "trace"],
        "core" => &["types", "error", "trace", "storage", "seeded"],
        "cleaning" => &["types", "error", "trace"],
        "recovery" => &["types", "error", "trace", "storage"],
        "accountant" => &[
            "types", "error", "trace", "storage", "seeded", "core", "cleaning", "recovery",
        ],
        // Test support and the crate root may use anything.
        "testing" | "lib" => return None,
        other => panic!("src/{other}: a file outside the module map (docs/design.md)"),
    };
    Some(below.iter().copied().collect())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn rooms_import_downwards_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );

    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let room = room_of(file.strip_prefix(&src).unwrap());
        let text = fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let code = line.trim_start();
            // Unit tests may reach the whole crate; they come last in a file.
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if let Some(target) = target_room(&name) {
                    if target != room {
                        uses.entry(room.clone())
                            .or_default()
                            .insert(target.to_string());
                    }
                }
            }
        }
    }

    let mut violations = Vec::new();
    for (room, targets) in &uses {
        if let Some(ok) = allowed(room) {
            for target in targets {
                if !ok.contains(target.as_str()) {
                    violations.push(format!("{room} imports {target}"));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward or sideways imports: {violations:?}"
    );
    // The facade does use the rooms below it (the check sees the imports).
    assert!(uses["accountant"].contains("core") && uses["accountant"].contains("cleaning"));
}

//! The order between the units of one directory: every name in an `after` list must be a
//! unit file of the directory, and no unit may wait, through `after`, for itself. A unit that
//! breaks either rule is rejected like any invalid file (`clusterd --check`, start-up and
//! daemon-reload alike), with the file, line and column of the offending name and, for a
//! cycle, its members in order. Linear in units and names, and without recursion, so a huge
//! or deeply chained directory cannot exhaust the stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::load::{read_unit_text, LoadedFile};
use super::unit_error::{UnitError, UnitErrorKind};

/// Rejects the units of `files` whose `after` names a unit that has no file, or that are
/// part of a cycle.
pub fn check_order(files: &mut [LoadedFile]) {
    let names: BTreeSet<String> = files.iter().map(|f| f.name.clone()).collect();
    let mut errors: BTreeMap<usize, UnitError> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let Ok(unit) = &file.result else { continue };
        if let Some(unknown) = unit.job.after.iter().find(|n| !names.contains(*n)) {
            errors.insert(
                i,
                error_at_name(
                    &file.path,
                    unknown,
                    UnitErrorKind::BadValue,
                    format!("after: no unit is named {unknown:?} (no file {unknown}.toml in this directory)"),
                ),
            );
        }
    }
    for (i, cycle) in cycles(files, &errors) {
        let Some(file) = files.get(i) else { continue };
        let next = cycle.get(1).cloned().unwrap_or_default();
        let message = if cycle.len() == 2 {
            format!("after: {} waits for itself", file.name)
        } else {
            format!(
                "after: a cycle, each waiting for the next: {}",
                cycle.join(" → ")
            )
        };
        errors.insert(
            i,
            error_at_name(&file.path, &next, UnitErrorKind::Conflict, message),
        );
    }
    for (i, error) in errors {
        if let Some(file) = files.get_mut(i) {
            file.result = Err(error);
        }
    }
}

/// Every unit that is part of a cycle, with the cycle as seen from it (its name first and
/// last). Units rejected already (`rejected`) and invalid files are left out: they start
/// nothing, so they close no cycle.
fn cycles(
    files: &[LoadedFile],
    rejected: &BTreeMap<usize, UnitError>,
) -> Vec<(usize, Vec<String>)> {
    let index: BTreeMap<&str, usize> = files
        .iter()
        .enumerate()
        .filter(|(i, f)| f.result.is_ok() && !rejected.contains_key(i))
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    // Edges: unit -> the units it waits for.
    let edges: BTreeMap<usize, Vec<usize>> = index
        .values()
        .map(|&i| {
            let after = files[i]
                .result
                .as_ref()
                .map(|u| u.job.after.clone())
                .unwrap_or_default();
            (
                i,
                after
                    .iter()
                    .filter_map(|n| index.get(n.as_str()).copied())
                    .collect(),
            )
        })
        .collect();
    // Peel off the units that wait for nothing left (Kahn): what remains is in a cycle or
    // waits for one.
    let mut waits_for: BTreeMap<usize, usize> = edges.iter().map(|(&i, e)| (i, e.len())).collect();
    let mut dependents: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&i, targets) in &edges {
        for &t in targets {
            dependents.entry(t).or_default().push(i);
        }
    }
    let mut free: Vec<usize> = waits_for
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(&i, _)| i)
        .collect();
    let mut remaining: BTreeSet<usize> = edges.keys().copied().collect();
    while let Some(i) = free.pop() {
        remaining.remove(&i);
        for &d in dependents.get(&i).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = waits_for.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    free.push(d);
                }
            }
        }
    }
    // Each remaining unit waits for at least one remaining unit: walking those edges from
    // any of them comes back to a unit seen on the walk, which closes a cycle.
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut found = Vec::new();
    for &start in &remaining {
        if done.contains(&start) {
            continue;
        }
        let mut path: Vec<usize> = Vec::new();
        let mut on_path: BTreeMap<usize, usize> = BTreeMap::new();
        let mut at = start;
        loop {
            if let Some(&from) = on_path.get(&at) {
                let members = &path[from..];
                for (k, &member) in members.iter().enumerate() {
                    let mut cycle: Vec<String> = members[k..]
                        .iter()
                        .chain(&members[..k])
                        .map(|&m| files[m].name.clone())
                        .collect();
                    cycle.push(files[member].name.clone());
                    found.push((member, cycle));
                }
                break;
            }
            if done.contains(&at) {
                break;
            }
            on_path.insert(at, path.len());
            path.push(at);
            let next = edges
                .get(&at)
                .and_then(|targets| targets.iter().find(|t| remaining.contains(t)));
            match next {
                Some(&next) => at = next,
                None => break,
            }
        }
        done.extend(path);
    }
    found
}

/// An error pointing at `name` in the `after` list of the file at `path` (read again: this
/// is the error path only), or at the whole file if it cannot be found.
fn error_at_name(path: &Path, name: &str, kind: UnitErrorKind, message: String) -> UnitError {
    let text = read_unit_text(path)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let offset = text.as_deref().and_then(|text| {
        let document = DeTable::parse(text).ok()?;
        let (_, after) = document
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "after")?;
        match after.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .find(|item| item.get_ref().as_str() == Some(name))
                .map(|item| item.span().start),
            _ => None,
        }
        .or(Some(after.span().start))
    });
    match (text, offset) {
        (Some(text), Some(offset)) => UnitError::at_offset(path, &text, offset, kind, message),
        _ => UnitError::whole_file(path, kind, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::load_units_dir;

    fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<LoadedFile>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
        }
        let loaded = load_units_dir(dir.path()).unwrap();
        (dir, loaded)
    }

    fn error_of<'a>(files: &'a [LoadedFile], name: &str) -> Option<&'a UnitError> {
        files.iter().find(|f| f.name == name)?.result.as_ref().err()
    }

    #[test]
    fn unknown_names_and_cycles_are_errors_that_point_at_the_name() {
        let (_dir, files) = load(&[
            ("a", "command = \"true\"\nafter = [\"b\"]\n"),
            ("b", "command = \"true\"\n\nafter = [\"c\"]\n"),
            ("c", "command = \"true\"\nafter = [\"x\", \"a\"]\n"),
            ("d", "command = \"true\"\nafter = [\"a\"]\n"),
            ("e", "command = \"true\"\nafter = [\"ghost\"]\n"),
            ("f", "command = \"true\"\nafter = [\"f\"]\n"),
            ("x", "command = \"true\"\n"),
        ]);
        let a = error_of(&files, "a").expect("a is in a cycle");
        assert_eq!(a.position, Some((2, 10)), "{a}");
        assert!(a.message.contains("a → b → c → a"), "{a}");
        let b = error_of(&files, "b").expect("b is in a cycle");
        assert_eq!(b.position, Some((3, 10)), "{b}");
        assert!(b.message.contains("b → c → a → b"), "{b}");
        let c = error_of(&files, "c").expect("c is in a cycle");
        assert_eq!(c.position, Some((2, 15)), "{c}");
        // d only waits for the cycle: it is not part of it.
        assert!(error_of(&files, "d").is_none());
        let e = error_of(&files, "e").expect("ghost is unknown");
        assert!(e.to_string().contains("e.toml:2:10"), "{e}");
        assert!(e.message.contains("no unit is named \"ghost\""), "{e}");
        let f = error_of(&files, "f").expect("f waits for itself");
        assert!(f.message.contains("f waits for itself"), "{f}");
        assert!(error_of(&files, "x").is_none());
    }

    #[test]
    fn a_long_chain_is_checked_without_recursion() {
        let count = 5000;
        let mut files: Vec<LoadedFile> = (0..count)
            .map(|i| {
                let path = std::path::PathBuf::from(format!("/u/u{i}.toml"));
                let text = if i + 1 < count {
                    format!("command = \"true\"\nafter = [\"u{}\"]\n", i + 1)
                } else {
                    "command = \"true\"\nafter = [\"u0\"]\n".to_string()
                };
                LoadedFile {
                    name: format!("u{i}"),
                    result: crate::unit::Unit::parse(&path, &text),
                    path,
                }
            })
            .collect();
        check_order(&mut files);
        assert!(files.iter().all(|f| f.result.is_err()));
        let first = files[0].result.as_ref().unwrap_err();
        assert!(first.message.contains("u0 → u1 → u2"), "{first}");
    }
}

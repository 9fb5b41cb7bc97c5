//! `watch`, `watch_ignore` and `watch_delay`: the files whose change reloads a unit, with
//! their defaults.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::unit::absolute;
use super::values::{HumanDuration, WatchSetting};

/// Names not watched unless `watch_ignore` says otherwise: hidden files and Node's packages.
const DEFAULT_WATCH_IGNORE: [&str; 2] = [".*", "node_modules"];
const DEFAULT_WATCH_DELAY: Duration = Duration::from_secs(1);

/// The absolute paths `watch` names, relative to `base` (where the instances run).
pub(super) fn watch_paths(watch: Option<Spanned<WatchSetting>>, base: &Path) -> Vec<PathBuf> {
    match watch.map(Spanned::into_inner) {
        None | Some(WatchSetting::Off) => Vec::new(),
        Some(WatchSetting::WorkingDirectory) => vec![base.to_path_buf()],
        Some(WatchSetting::Paths(paths)) => paths.iter().map(|p| absolute(&base.join(p))).collect(),
    }
}

/// The `watch_ignore` patterns: one without a `/` matches a name at every depth; one with a
/// `/` is a path, relative to `base` (where the instances run, as PM2's `ignore_watch` is
/// relative to the app's directory) unless absolute, made absolute here (a trailing `/` and
/// `.` and `..` components resolved) so that the watcher matches it against whole paths.
pub(super) fn watch_ignore(patterns: Option<Vec<String>>, base: &Path) -> Vec<String> {
    let Some(patterns) = patterns else {
        return DEFAULT_WATCH_IGNORE.map(String::from).to_vec();
    };
    patterns
        .into_iter()
        .map(|pattern| {
            if !pattern.contains('/') {
                return pattern;
            }
            let mut path = PathBuf::from("/");
            for part in base.join(&pattern).components() {
                match part {
                    Component::ParentDir => {
                        path.pop();
                    }
                    Component::Normal(name) => path.push(name),
                    Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                }
            }
            path.display().to_string()
        })
        .collect()
}

pub(super) fn watch_delay(delay: Option<HumanDuration>) -> Duration {
    delay.map_or(DEFAULT_WATCH_DELAY, |d| d.0)
}

//! `watch`, `watch_ignore` and `watch_delay`: the files whose change reloads a unit, with
//! their defaults.

use std::path::{Path, PathBuf};
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

pub(super) fn watch_ignore(patterns: Option<Vec<String>>) -> Vec<String> {
    patterns.unwrap_or_else(|| DEFAULT_WATCH_IGNORE.map(String::from).to_vec())
}

pub(super) fn watch_delay(delay: Option<HumanDuration>) -> Duration {
    delay.map_or(DEFAULT_WATCH_DELAY, |d| d.0)
}

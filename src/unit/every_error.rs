//! Every error of a unit file, not only the first one serde stops at: `clusterd --check`
//! reports them all, so a file is fixed in one round.
//!
//! The file is parsed as a plain TOML table; every key is then checked on its own against
//! the type [`UnitFile`] gives it. Checks that span several keys (an unknown user, reuseport
//! with a unix address) run in [`Unit::parse`] once every key is valid on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::unit::Unit;
use super::unit_error::UnitError;
use super::unit_file::RestartLimitTable;
use super::values::{
    Balance, CommandLine, HumanDuration, ListenAddress, NodeClusterSetting, NodeClusterStop,
    ReadyMode, RestartPolicy, SignalName,
};

/// Every key a unit file may have, in the order the docs list them.
pub const KEYS: &[&str] = &[
    "command",
    "description",
    "instances",
    "restart",
    "restart_limit",
    "kill_signal",
    "kill_timeout",
    "on_giveup",
    "working_directory",
    "environment",
    "user",
    "group",
    "listen",
    "balance",
    "ready",
    "ready_timeout",
    "node_cluster",
    "node_cluster_stop",
];

/// All the errors of the unit file `path` with contents `text`; empty when it is valid.
pub fn every_error(path: &Path, text: &str) -> Vec<UnitError> {
    let first = match Unit::parse(path, text) {
        Ok(_) => return Vec::new(),
        Err(e) => e,
    };
    // A syntax error leaves nothing reliable to check further.
    let Ok(document) = DeTable::parse(text) else {
        return vec![first];
    };
    let mut errors = Vec::new();
    let mut has_command = false;
    for (key, value) in document.get_ref().iter() {
        let name: &str = key.get_ref();
        has_command |= name == "command";
        let checked = match name {
            "command" | "on_giveup" => check::<CommandLine>(value),
            "description" | "user" | "group" => check::<String>(value),
            "instances" => check::<u32>(value),
            "restart" => check::<RestartPolicy>(value),
            "restart_limit" => check::<RestartLimitTable>(value),
            "kill_signal" => check::<SignalName>(value),
            "kill_timeout" | "ready_timeout" => check::<HumanDuration>(value),
            "working_directory" => check::<PathBuf>(value),
            "environment" => check::<BTreeMap<String, String>>(value),
            "listen" => check::<Vec<ListenAddress>>(value),
            "balance" => check::<Balance>(value),
            "ready" => check::<ReadyMode>(value),
            "node_cluster" => check::<NodeClusterSetting>(value),
            "node_cluster_stop" => check::<NodeClusterStop>(value),
            unknown => {
                let expected = KEYS
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                errors.push(UnitError::at_offset(
                    path,
                    text,
                    key.span().start,
                    format!("unknown field `{unknown}`, expected one of {expected}"),
                ));
                continue;
            }
        };
        if let Err(e) = checked {
            let offset = e.span().map_or(value.span().start, |s| s.start);
            errors.push(UnitError::at_offset(
                path,
                text,
                offset,
                e.message().trim_end().to_string(),
            ));
        }
    }
    if !has_command {
        errors.push(UnitError::whole_file(path, "missing field `command`"));
    }
    if errors.is_empty() {
        // Each key is fine on its own: the error is in how they go together.
        errors.push(first);
    }
    errors.sort_by_key(|e| e.position);
    errors
}

fn check<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Result<(), toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value.clone())).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_key_of_a_file_is_reported_with_its_position() {
        let text = "command = \"true\"\nrestrat = \"always\"\nkill_timeout = \"5 parsecs\"\nrestart = \"sometimes\"\ninstances = -1\n";
        let errors = every_error(Path::new("/u/web.toml"), text);
        let positions: Vec<_> = errors.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            vec![Some((2, 1)), Some((3, 16)), Some((4, 11)), Some((5, 13))],
            "{errors:#?}"
        );
        assert!(errors[0].message.contains("unknown field `restrat`"));
        assert!(errors[1].message.contains("parsecs"));
    }

    #[test]
    fn a_missing_command_is_reported_beside_other_errors() {
        let errors = every_error(Path::new("/u/web.toml"), "instances = \"two\"\n");
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors
            .iter()
            .any(|e| e.message.contains("missing field `command`")));
    }

    #[test]
    fn a_valid_file_has_no_errors_and_a_cross_key_error_is_still_found() {
        assert!(every_error(Path::new("/u/web.toml"), "command = \"true\"\n").is_empty());
        let errors = every_error(
            Path::new("/u/web.toml"),
            "command = \"true\"\nuser = \"no-such-user-here\"\n",
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("unknown user"));
    }
}

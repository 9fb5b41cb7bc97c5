//! Every error of a unit file, not only the first one serde stops at: `clusterd --check`
//! reports them all, so a file is fixed in one round.
//!
//! The file is parsed as a plain TOML table; every key is then checked on its own against
//! the type [`UnitFile`] gives it. Checks that span several keys (an unknown user, reuseport
//! with a unix address) run in [`Unit::parse`] once every key is valid on its own.

use std::path::Path;

use toml::de::DeTable;

use super::keys::{key, KEYS};
use super::unit::Unit;
use super::unit_error::{UnitError, UnitErrorKind};

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
    for (key_name, value) in document.get_ref().iter() {
        let name: &str = key_name.get_ref();
        has_command |= name == "command";
        let Some(spec) = key(name) else {
            let expected = KEYS
                .iter()
                .map(|k| format!("`{}`", k.name))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(UnitError::at_offset(
                path,
                text,
                key_name.span().start,
                UnitErrorKind::UnknownKey,
                format!("unknown field `{name}`, expected one of {expected}"),
            ));
            continue;
        };
        let checked = (spec.check)(value);
        if let Err(e) = checked {
            let offset = e.span().map_or(value.span().start, |s| s.start);
            errors.push(UnitError::at_offset(
                path,
                text,
                offset,
                UnitErrorKind::BadValue,
                e.message().trim_end().to_string(),
            ));
        }
    }
    if !has_command {
        errors.push(UnitError::whole_file(
            path,
            UnitErrorKind::MissingKey,
            "missing field `command`",
        ));
    }
    if errors.is_empty() {
        // Each key is fine on its own: the error is in how they go together.
        errors.push(first);
    }
    errors.sort_by_key(|e| e.position);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_key_of_a_file_is_reported_with_its_position() {
        let text = "command = \"true\"\nrestrat = \"always\"\nkill_timeout = \"5 parsecs\"\nrestart = \"sometimes\"\ninstances = \"two\"\n";
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

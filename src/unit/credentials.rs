//! The account a unit's instances run as (`user`, `group`), resolved when the file is loaded
//! so that a typo is a load error with a position rather than a failed start.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};
use toml::Spanned;

use super::unit_error::{At, UnitError, UnitErrorKind};

/// The account an instance runs as; every field `None` (or empty): clusterd's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    /// Supplementary groups of `user` (initgroups), set when `user` is.
    pub groups: Vec<Gid>,
    /// USER/LOGNAME/HOME for the environment, set when `user` is.
    pub user_name: Option<String>,
    pub home: Option<PathBuf>,
}

pub(super) fn resolve_credentials(
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
    at: &At,
) -> Result<Credentials, UnitError> {
    let mut credentials = Credentials {
        uid: None,
        gid: None,
        groups: Vec::new(),
        user_name: None,
        home: None,
    };
    if let Some(user) = user {
        let name = user.get_ref();
        let found = match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(name),
        };
        let entry = match found {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                return Err(at(
                    user.span().start,
                    UnitErrorKind::UnknownAccount,
                    format!("unknown user {name:?}"),
                ))
            }
            Err(e) => {
                return Err(at(
                    user.span().start,
                    UnitErrorKind::UnknownAccount,
                    format!("cannot look up user {name:?}: {e}"),
                ))
            }
        };
        let c_name = std::ffi::CString::new(entry.name.clone()).unwrap_or_default();
        credentials.groups = nix::unistd::getgrouplist(&c_name, entry.gid).unwrap_or_default();
        credentials.uid = Some(entry.uid);
        credentials.gid = Some(entry.gid);
        credentials.user_name = Some(entry.name);
        credentials.home = Some(entry.dir);
    }
    if let Some(group) = group {
        let gid = resolve_group(group.get_ref())
            .map_err(|e| at(group.span().start, UnitErrorKind::UnknownAccount, e))?;
        credentials.gid = Some(gid);
    }
    Ok(credentials)
}

/// A group given by name or number, as `group =` in a unit and `clusterd --socket-group`
/// take it.
pub fn resolve_group(name: &str) -> Result<Gid, String> {
    let found = match name.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    };
    match found {
        Ok(Some(entry)) => Ok(entry.gid),
        Ok(None) => Err(format!("unknown group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

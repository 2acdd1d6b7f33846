//! Console users: `tongbu-hub admin add --user U --role admin|operator`. A user name is 1–64
//! letters, digits, `.`, `_` or `-`; a password at least ten characters, stored only as an
//! Argon2id hash. An existing user is refused unless the caller asks to reset it (which also
//! ends its sessions). Every change is audited.

use crate::store::{self, AuditEntry, ConsoleUser, Role, Store, StoreError};

use super::password::{self, PasswordError};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("user {0:?} already exists; pass --reset to replace its role and password")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn check_username(name: &str) -> Result<(), UserError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(UserError::BadName(name.to_owned()))
    }
}

/// Adds (or with `reset`, replaces) a console user whose password is already hashed.
pub fn put_user(
    w: &mut dyn store::Writes,
    now_ms: i64,
    actor: &str,
    username: &str,
    role: Role,
    password_hash: String,
    reset: bool,
) -> Result<(), UserError> {
    check_username(username)?;
    let user = ConsoleUser {
        username: username.to_owned(),
        role,
        password_hash,
        created_at_ms: now_ms,
        disabled: false,
    };
    if !w.put_console_user(&user, reset)? {
        return Err(UserError::Exists(username.to_owned()));
    }
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: if reset { "user.reset" } else { "user.add" }.into(),
        detail: format!("user {username}, role {role}"),
    })?;
    Ok(())
}

/// `admin add` as one transaction of its own: hashes the password (default Argon2id cost),
/// then stores the user.
pub fn add_user_in(
    store: &mut dyn Store,
    now_ms: i64,
    username: &str,
    role: Role,
    password: &str,
    reset: bool,
) -> Result<(), UserError> {
    check_username(username)?;
    let hash = password::hash(password)?;
    store::write(store, |w| {
        put_user(w, now_ms, "cli", username, role, hash, reset)
    })
}

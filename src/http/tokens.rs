//! Admin bearer tokens: the file `--admin-token-file` names, and who a request is.
//!
//! One token a line, as `NAME ROLE TOKEN [CLUSTER,…]`:
//!
//! ```text
//! # name     role   token                              clusters (none: every cluster)
//! alice      admin  3f9a0c1e8b7d45f2a6c3e9d1b0f4a7c2
//! grafana    read   0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e
//! payments   admin  9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b   payments,payments-eu
//! ```
//!
//! - `NAME` names the caller in the audit record and the log: 1 to 64 bytes of
//!   `A-Z a-z 0-9 . _ - @`, unique in the file.
//! - `ROLE` is `read` (listings, gates, the watch, metrics) or `admin` (everything,
//!   config contents included).
//! - `TOKEN` is what the client sends as `Authorization: Bearer TOKEN`: 32 to 512 visible
//!   ASCII characters (no spaces), unique in the file. `openssl rand -hex 32` makes one.
//! - `CLUSTER,…`, if present, limits the token to those clusters.
//!
//! Blank lines and lines starting with `#` are skipped; a `#` field after the token
//! starts a comment too. The file must be private to its
//! owner (as a key file). Anything else is refused with its line number, never with the
//! token's text.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed once and compared
//! with every digest in constant time (`subtle`): neither the time taken nor an early
//! exit tells an attacker how much of a guess was right, or which entry it was near.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::identity::validate_cluster;

/// The shortest token accepted (32 characters: 16 random bytes as hex, 128 bits).
pub const MIN_TOKEN_LEN: usize = 32;
/// The longest token accepted.
pub const MAX_TOKEN_LEN: usize = 512;
/// The longest token name.
pub const MAX_NAME_LEN: usize = 64;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Listings, gates, the watch and metrics; no changes, no config contents.
    Read,
    /// Everything.
    Admin,
}

impl Role {
    /// `read` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// One token of the file (its digest, never its text).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Who: the name the audit record and the log use.
    pub name: Arc<str>,
    /// What it allows.
    pub role: Role,
    /// The clusters it is limited to (`None`: every cluster).
    pub clusters: Option<BTreeSet<String>>,
    digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("clusters", &self.clusters)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether the token may act on `cluster`.
    pub fn covers(&self, cluster: &str) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.contains(cluster))
    }

    /// Whether the token covers every cluster.
    pub fn unlimited(&self) -> bool {
        self.clusters.is_none()
    }
}

/// Why a token file was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenFileError {
    /// A line does not have three or four fields.
    #[error("line {line}: expected NAME ROLE TOKEN [CLUSTER,...], found {fields} fields")]
    Fields {
        /// The line (from 1).
        line: usize,
        /// How many fields it has.
        fields: usize,
    },
    /// A name is empty, too long or has a byte outside its alphabet.
    #[error("line {line}: the name must be 1 to {MAX_NAME_LEN} bytes of A-Z a-z 0-9 . _ - @")]
    Name {
        /// The line.
        line: usize,
    },
    /// Two lines have the same name.
    #[error("line {line}: the name {name:?} is used on line {first} already")]
    DuplicateName {
        /// The line.
        line: usize,
        /// The name.
        name: String,
        /// The line that has it first.
        first: usize,
    },
    /// The role is neither `read` nor `admin`.
    #[error("line {line}: the role must be read or admin, not {role:?}")]
    Role {
        /// The line.
        line: usize,
        /// What it says.
        role: String,
    },
    /// The token is too short, too long or not visible ASCII.
    #[error(
        "line {line}: the token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} visible ASCII characters (openssl rand -hex 32 makes one)"
    )]
    Token {
        /// The line.
        line: usize,
    },
    /// Two lines have the same token.
    #[error("line {line}: this token is the token of line {first} already")]
    DuplicateToken {
        /// The line.
        line: usize,
        /// The line that has it first.
        first: usize,
    },
    /// A cluster of the list is not a valid cluster name.
    #[error("line {line}: {cluster:?} is not a valid cluster name")]
    Cluster {
        /// The line.
        line: usize,
        /// The name.
        cluster: String,
    },
    /// The file has no token at all.
    #[error("no token in the file: a line NAME ROLE TOKEN [CLUSTER,...] is needed")]
    Empty,
}

/// Every token of a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl Tokens {
    /// No tokens: the admin API asks nobody who they are.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Parses a token file's text (see the module's documentation).
    pub fn parse(text: &str) -> Result<Tokens, TokenFileError> {
        let mut tokens: Vec<Token> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            // A comment may also end a line, after the token or the clusters (neither of
            // which can start with `#` there: a token is the third field).
            let mut fields: Vec<&str> = content.split_whitespace().collect();
            if let Some(at) = fields.iter().skip(3).position(|f| f.starts_with('#')) {
                fields.truncate(3 + at);
            }
            let (name, role, token, clusters) = match fields.as_slice() {
                [name, role, token] => (*name, *role, *token, None),
                [name, role, token, clusters] => (*name, *role, *token, Some(*clusters)),
                other => {
                    return Err(TokenFileError::Fields {
                        line,
                        fields: other.len(),
                    });
                }
            };
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
            {
                return Err(TokenFileError::Name { line });
            }
            if let Some(i) = tokens.iter().position(|t| &*t.name == name) {
                return Err(TokenFileError::DuplicateName {
                    line,
                    name: name.to_owned(),
                    first: lines[i],
                });
            }
            let role = match role {
                "read" => Role::Read,
                "admin" => Role::Admin,
                other => {
                    return Err(TokenFileError::Role {
                        line,
                        role: other.to_owned(),
                    });
                }
            };
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len())
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(TokenFileError::Token { line });
            }
            let digest = digest(token.as_bytes());
            if let Some(i) = tokens.iter().position(|t| t.digest == digest) {
                return Err(TokenFileError::DuplicateToken {
                    line,
                    first: lines[i],
                });
            }
            let clusters = match clusters {
                None => None,
                Some(list) => {
                    let mut set = BTreeSet::new();
                    for cluster in list.split(',') {
                        validate_cluster(cluster).map_err(|_| TokenFileError::Cluster {
                            line,
                            cluster: cluster.to_owned(),
                        })?;
                        set.insert(cluster.to_owned());
                    }
                    Some(set)
                }
            };
            tokens.push(Token {
                name: Arc::from(name),
                role,
                clusters,
                digest,
            });
            lines.push(line);
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Tokens { tokens })
    }

    /// Reads and parses a token file, which must be private to its owner.
    pub fn read(path: &Path) -> Result<Tokens, crate::config::ConfigFileError> {
        let text = crate::config::read_private_file(path)?;
        Tokens::parse(&text).map_err(|e| crate::config::ConfigFileError::TokenFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Whether any token is configured (then the admin API asks who a caller is).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose text is `presented`, if any.
    ///
    /// Compares the presented token's digest with every token's, each in constant time,
    /// and never stops early: the time depends on the number of tokens only.
    pub fn find(&self, presented: &[u8]) -> Option<&Token> {
        let wanted = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            let equal: bool = token.digest.ct_eq(&wanted).into();
            if equal && found.is_none() {
                found = Some(token);
            }
        }
        found
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The tokens in force, shared by every request and replaced whole on a reload.
#[derive(Clone, Debug, Default)]
pub struct TokenStore {
    current: Arc<RwLock<Arc<Tokens>>>,
}

impl TokenStore {
    /// A store holding `tokens`.
    pub fn new(tokens: Tokens) -> TokenStore {
        TokenStore {
            current: Arc::new(RwLock::new(Arc::new(tokens))),
        }
    }

    /// The tokens in force now.
    pub fn get(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `tokens` in force for every request from now on.
    pub fn replace(&self, tokens: Tokens) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn a_file_of_tokens_parses_with_roles_and_clusters() {
        let text = format!(
            "# who role token clusters\n\n  alice admin {A} # ops\nbob read {B} pay,pay-eu #x\n"
        );
        let tokens = Tokens::parse(&text).expect("parses");
        assert_eq!(tokens.len(), 2);
        let alice = tokens.find(A.as_bytes()).expect("alice");
        assert_eq!((&*alice.name, alice.role), ("alice", Role::Admin));
        assert!(alice.unlimited() && alice.covers("anything"));
        let bob = tokens.find(B.as_bytes()).expect("bob");
        assert_eq!((&*bob.name, bob.role), ("bob", Role::Read));
        assert!(bob.covers("pay") && bob.covers("pay-eu") && !bob.covers("other"));
        assert!(tokens.find(b"0123456789abcdef0123456789abcdeF").is_none());
        assert!(tokens.find(b"").is_none());
    }

    #[test]
    fn bad_lines_are_refused_with_their_number_and_never_the_token() {
        let cases = [
            (
                "alice admin\n".to_owned(),
                TokenFileError::Fields { line: 1, fields: 2 },
            ),
            (
                format!("alice admin {A} pay extra\n"),
                TokenFileError::Fields { line: 1, fields: 5 },
            ),
            (
                format!("al/ice admin {A}\n"),
                TokenFileError::Name { line: 1 },
            ),
            (
                format!("alice admin {A}\nalice read {B}\n"),
                TokenFileError::DuplicateName {
                    line: 2,
                    name: "alice".into(),
                    first: 1,
                },
            ),
            (
                format!("alice root {A}\n"),
                TokenFileError::Role {
                    line: 1,
                    role: "root".into(),
                },
            ),
            (
                "alice admin short\n".to_owned(),
                TokenFileError::Token { line: 1 },
            ),
            (
                format!("#\nalice admin {A}\nbob read {A}\n"),
                TokenFileError::DuplicateToken { line: 3, first: 2 },
            ),
            (
                format!("alice admin {A} pay,,eu\n"),
                TokenFileError::Cluster {
                    line: 1,
                    cluster: String::new(),
                },
            ),
            ("# nothing\n\n".to_owned(), TokenFileError::Empty),
        ];
        for (text, want) in cases {
            let got = Tokens::parse(&text).expect_err(&text);
            assert_eq!(got, want, "{text}");
            assert!(!got.to_string().contains(A), "{got}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_digest() {
        let tokens = Tokens::parse(&format!("alice admin {A}\n")).expect("parses");
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("alice") && !shown.contains("digest"),
            "{shown}"
        );
    }

    #[test]
    fn a_replaced_store_answers_with_the_new_tokens() {
        let store = TokenStore::new(Tokens::parse(&format!("alice admin {A}\n")).expect("parses"));
        assert!(store.get().find(A.as_bytes()).is_some());
        store.replace(Tokens::parse(&format!("bob admin {B}\n")).expect("parses"));
        assert!(store.get().find(A.as_bytes()).is_none());
        assert!(store.get().find(B.as_bytes()).is_some());
    }
}

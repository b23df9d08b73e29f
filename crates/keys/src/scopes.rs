//! A key's scopes: what it may do. A key without scopes carries its user's full permissions (the
//! product page's model: "a key carries its user's permissions"); a key with scopes may do only
//! what they name. Scope names are the operator's (`keys:read`, `analytics:write`); nothing here
//! gives them a meaning beyond equality, so there are no wildcards to get wrong.

use std::fmt;

use crate::DomainError;

/// A validated set of scopes, sorted and without duplicates. Empty means **unscoped**: the key
/// has its user's full permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<String>);

/// Why a list of scopes was refused, with the index of the entry at fault (for the caller's
/// field path, e.g. `scopes[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ScopesError {
    /// The entry at fault; `None` when the list as a whole is refused (too many).
    pub index: Option<usize>,
    /// What is wrong.
    pub reason: DomainError,
}

impl Scopes {
    /// The longest scope name.
    pub const MAX_LEN: usize = 64;
    /// The most scopes one key may carry.
    pub const MAX_SCOPES: usize = 32;

    /// No scopes: the user's full permissions.
    pub const fn unscoped() -> Self {
        Self(Vec::new())
    }

    /// Validates each name (1–64 of `[a-z0-9:._-]`) and the count (at most 32 given, as the
    /// published schema's `maxItems` says); a name given twice is kept once.
    ///
    /// # Errors
    /// [`ScopesError`] naming the first bad entry, or the count.
    pub fn parse<I, S>(names: I) -> Result<Self, ScopesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut scopes = Vec::new();
        for (index, name) in names.into_iter().enumerate() {
            let name = name.as_ref();
            check_name(name).map_err(|reason| ScopesError {
                index: Some(index),
                reason,
            })?;
            scopes.push(name.to_owned());
        }
        if scopes.len() > Self::MAX_SCOPES {
            return Err(ScopesError {
                index: None,
                reason: DomainError::TooManyScopes { got: scopes.len() },
            });
        }
        scopes.sort_unstable();
        scopes.dedup();
        Ok(Self(scopes))
    }

    /// Reads the stored form ([`Scopes::to_stored`]): `None` or an empty text is unscoped.
    ///
    /// # Errors
    /// [`ScopesError`] when the stored text breaks the rules (a corrupt row).
    pub fn from_stored(text: Option<&str>) -> Result<Self, ScopesError> {
        match text {
            None => Ok(Self::unscoped()),
            Some(text) => Self::parse(text.split_ascii_whitespace()),
        }
    }

    /// The stored form: the names joined by single spaces, `None` when unscoped. Canonical (sorted,
    /// deduplicated), so two equal sets store the same text.
    pub fn to_stored(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.join(" "))
    }

    /// Whether the key is unscoped (full permissions).
    pub fn is_unscoped(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, sorted.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Whether the key may do what `name` stands for: an unscoped key may do everything.
    pub fn allows(&self, name: &str) -> bool {
        self.is_unscoped() || self.0.binary_search_by(|s| s.as_str().cmp(name)).is_ok()
    }

    /// The first of `required` this key lacks, if any (all are required).
    pub fn first_missing<'a, S: AsRef<str>>(&self, required: &'a [S]) -> Option<&'a str> {
        required
            .iter()
            .map(AsRef::as_ref)
            .find(|name| !self.allows(name))
    }

    /// Whether a key with these scopes may do no more than one with `other`: every scope of
    /// `self` is in `other`, and an unscoped `self` (everything) is within only an unscoped
    /// `other`. The no-escalation rule: a scoped caller manages only keys within its scopes.
    pub fn is_within(&self, other: &Scopes) -> bool {
        if other.is_unscoped() {
            return true;
        }
        !self.is_unscoped() && self.0.iter().all(|name| other.allows(name))
    }

    /// The first scope of `self` that `other` lacks (`"*"` when `self` is unscoped and `other`
    /// is not), for an error that says what would be escalated.
    pub fn first_outside(&self, other: &Scopes) -> Option<&str> {
        if other.is_unscoped() {
            return None;
        }
        if self.is_unscoped() {
            return Some("*");
        }
        self.0
            .iter()
            .map(String::as_str)
            .find(|name| !other.allows(name))
    }
}

/// `*` for an unscoped key, else the names joined by single spaces: the `X-Stanna-Scopes` value.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("*");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// Checks one scope name: 1–64 of `[a-z0-9:._-]`.
///
/// # Errors
/// [`DomainError::ScopeSyntax`].
pub fn check_name(name: &str) -> Result<(), DomainError> {
    let ok = (1..=Scopes::MAX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b':' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::ScopeSyntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(names: &[&str]) -> Scopes {
        Scopes::parse(names).unwrap()
    }

    #[test]
    fn names_follow_the_syntax() {
        for good in [
            "keys:read",
            "analytics:write",
            "a",
            "v1.read_all-x",
            &"a".repeat(64),
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Keys:read",
            "keys read",
            "keys/read",
            "*",
            "é",
            &"a".repeat(65),
        ] {
            assert_eq!(check_name(bad), Err(DomainError::ScopeSyntax), "{bad:?}");
        }
    }

    #[test]
    fn a_list_is_sorted_deduplicated_and_at_most_32() {
        let s = scopes(&["b", "a", "b"]);
        assert_eq!(s.names(), ["a", "b"]);
        assert_eq!(s.to_stored().as_deref(), Some("a b"));
        let err = Scopes::parse(["ok", "NOT"]).unwrap_err();
        assert_eq!(err.index, Some(1));
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        let err = Scopes::parse(&many).unwrap_err();
        assert_eq!(err.reason, DomainError::TooManyScopes { got: 33 });
        assert!(Scopes::parse(&many[..32]).is_ok());
        let repeated: Vec<&str> = std::iter::repeat_n("a", 33).collect();
        assert!(
            Scopes::parse(repeated).is_err(),
            "33 given is too many, duplicates or not"
        );
        assert_eq!(
            Scopes::parse(Vec::<String>::new()).unwrap(),
            Scopes::unscoped()
        );
    }

    #[test]
    fn unscoped_allows_everything_and_is_within_only_unscoped() {
        let all = Scopes::unscoped();
        let read = scopes(&["keys:read"]);
        assert!(all.allows("anything"));
        assert!(all.is_within(&all));
        assert!(!all.is_within(&read));
        assert_eq!(all.first_outside(&read), Some("*"));
        assert!(read.is_within(&all));
        assert_eq!(all.to_string(), "*");
        assert_eq!(Scopes::from_stored(None).unwrap(), all);
    }

    #[test]
    fn missing_scopes_are_named() {
        let s = scopes(&["keys:read", "a:b"]);
        assert_eq!(s.first_missing(&["keys:read"]), None);
        assert_eq!(
            s.first_missing(&["keys:read", "keys:write"]),
            Some("keys:write")
        );
        assert_eq!(s.first_outside(&scopes(&["keys:read"])), Some("a:b"));
        assert_eq!(s.to_string(), "a:b keys:read");
    }

    /// Every subset of {a, b, c} against every other (the empty one is unscoped): exhaustive,
    /// so the rule is checked on all 64 pairs rather than sampled.
    #[test]
    fn within_is_what_allows_says_on_every_pair() {
        let universe = ["a", "b", "c"];
        let all: Vec<Scopes> = (0..8u8)
            .map(|bits| {
                Scopes::parse(
                    universe
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| bits & (1 << i) != 0)
                        .map(|(_, n)| *n),
                )
                .unwrap()
            })
            .collect();
        for a in &all {
            for b in &all {
                let by_names = b.is_unscoped()
                    || (!a.is_unscoped() && a.names().iter().all(|n| b.names().contains(n)));
                assert_eq!(a.is_within(b), by_names, "{a} within {b}");
                assert_eq!(a.first_outside(b).is_none(), by_names, "{a} outside {b}");
                assert_eq!(&Scopes::from_stored(a.to_stored().as_deref()).unwrap(), a);
            }
        }
    }
}

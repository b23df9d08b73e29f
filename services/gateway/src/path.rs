//! The one normal form of a request path, made before routing: what the routes, the route-scope
//! map (`STANNA_ROUTE_SCOPES`) and the upstream all see, so no spelling of a path can be matched
//! as one thing and served as another.
//!
//! - empty segments collapse (`//v1//admin` is `/v1/admin`);
//! - percent-encoded unreserved characters are decoded (`%61dmin` is `admin`, `%2e%2e` is `..`)
//!   and the other escapes written in upper case (RFC 3986 §6.2.2);
//! - `.` and `..` segments are resolved (`/v1/x/../admin` is `/v1/admin`);
//! - refused, as no upstream agrees on their meaning: an encoded slash `%2F` (one segment to us,
//!   two to a server that decodes first), a backslash, literal or `%5C` (a separator on some
//!   servers), `;` literal or `%3B` (path parameters: Tomcat and Spring drop `;x` and read
//!   `..;` as `..`), an escaped `%` (`%25`, which a server decoding twice reads as another
//!   escape), an encoded NUL, a broken escape, and `..` climbing above the root.
//!
//! A path already in normal form — nearly every request — is returned borrowed, with nothing
//! allocated.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` inside a segment.
    #[error("the path holds an encoded slash (%2F); send the slash itself or another encoding")]
    EncodedSlash,
    /// A backslash, literal or `%5C`.
    #[error("the path holds a backslash; paths are separated by '/' only")]
    Backslash,
    /// `;`, literal or `%3B`: path parameters, which Tomcat and Spring strip (`/a;x` is `/a`)
    /// or resolve (`/..;/` is `/../`).
    #[error("the path holds a ';' (path parameters are not accepted: servers disagree on them)")]
    Semicolon,
    /// `%25`: an escaped '%', which a server that decodes twice reads as another escape.
    #[error("the path holds an escaped '%' (%25), which some servers decode twice")]
    EncodedPercent,
    /// `%00`.
    #[error("the path holds an encoded NUL (%00)")]
    Nul,
    /// `%` not followed by two hex digits.
    #[error("the path holds a '%' that is not followed by two hex digits")]
    BadEscape,
    /// `..` above the root.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    /// Not starting with `/` (an authority-form or asterisk-form target).
    #[error("the path must start with '/'")]
    NotAbsolute,
}

/// `path` in normal form (see the module), borrowed when it already is.
///
/// # Errors
/// [`PathError`] for a path with no safe normal form.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let trailing_slash = path.len() > 1 && path.ends_with('/');
    let mut ends_in_dots = false;
    for raw in path[1..].split('/') {
        ends_in_dots = false;
        if raw.is_empty() {
            continue;
        }
        let segment = normal_segment(raw)?;
        match segment.as_str() {
            "." => ends_in_dots = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                ends_in_dots = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    // `/a/` stays `/a/`, and `/a/b/..` is the directory `/a/` (RFC 3986 §5.2.4).
    if segments.is_empty() || trailing_slash || ends_in_dots {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` (starting with `/`) needs no change: no empty, `.` or `..` segment, no
/// backslash, and every escape already upper-case and of a character that stays escaped (so a
/// path with UTF-8 escapes is not copied on every request).
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' | b';' => return false,
            b'%' => {
                let upper_hex = |b: Option<&u8>| {
                    b.and_then(|b| {
                        matches!(b, b'0'..=b'9' | b'A'..=b'F').then(|| (*b as char).to_digit(16))
                    })
                    .flatten()
                };
                let (Some(hi), Some(lo)) =
                    (upper_hex(bytes.get(i + 1)), upper_hex(bytes.get(i + 2)))
                else {
                    return false;
                };
                let byte = (hi * 16 + lo) as u8;
                if stays_escaped(byte).is_err() || is_unreserved(byte) {
                    return false;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    // Every segment after a '/': empty only for a lone "/" or a final trailing slash.
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// One segment with unreserved escapes decoded and the rest upper-cased.
fn normal_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let byte = (hi * 16 + lo) as u8;
                stays_escaped(byte)?;
                if is_unreserved(byte) {
                    out.push(byte as char);
                } else {
                    out.push('%');
                    out.push_str(&format!("{byte:02X}"));
                }
                i += 3;
            }
            _ => {
                // Any other byte of a valid URI path is ASCII: hyper accepted the request line.
                // A multi-byte character (not possible in a parsed URI) is copied whole.
                let len = raw[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&raw[i..i + len]);
                i += len;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 unreserved characters: their escapes are decoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Refuses the escapes with no safe meaning.
fn stays_escaped(byte: u8) -> Result<(), PathError> {
    match byte {
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::Backslash),
        0 => Err(PathError::Nul),
        b';' => Err(PathError::Semicolon),
        b'%' => Err(PathError::EncodedPercent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalise(path).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/v1/admin",
            "/v1/admin/",
            "/a.b/c..d/.e",
            "/v1/caf%C3%A9",
            "/a%20b",
        ] {
            assert!(
                matches!(normalise(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn tricks_resolve_to_the_path_they_mean() {
        for (path, want) in [
            ("//v1/admin", "/v1/admin"),
            ("/v1//admin", "/v1/admin"),
            ("/v1/./admin", "/v1/admin"),
            ("/v1/x/../admin", "/v1/admin"),
            ("/v1/%61dmin", "/v1/admin"),
            ("/v1/x/%2e%2E/admin", "/v1/admin"),
            ("/v1/admin/.", "/v1/admin/"),
            ("/v1/admin/x/..", "/v1/admin/"),
            ("/v1/caf%c3%a9", "/v1/caf%C3%A9"),
            ("/..%2f", "error"),
            ("/.", "/"),
            ("//", "/"),
        ] {
            match norm(path) {
                Ok(got) => assert_eq!(got, want, "{path}"),
                Err(e) => assert_eq!("error", want, "{path}: {e}"),
            }
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, why) in [
            ("/v1%2Fadmin", PathError::EncodedSlash),
            ("/v1%2fadmin", PathError::EncodedSlash),
            ("/v1\\admin", PathError::Backslash),
            ("/v1%5Cadmin", PathError::Backslash),
            ("/v1/%00", PathError::Nul),
            ("/v1/secrets;x", PathError::Semicolon),
            ("/v1/status/..;/admin", PathError::Semicolon),
            ("/v1/a%3bb", PathError::Semicolon),
            ("/v1/%252e%252e/admin", PathError::EncodedPercent),
            ("/v1/%zz", PathError::BadEscape),
            ("/v1/%4", PathError::BadEscape),
            ("/../etc", PathError::AboveRoot),
            ("/v1/../../x", PathError::AboveRoot),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(norm(path), Err(why), "{path}");
        }
    }

    #[test]
    fn the_normal_form_is_a_fixed_point() {
        for path in ["//a/./b/../c/%7e/", "/x/%2e/y", "/%41%42/..", "/a//b//"] {
            let once = norm(path).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{path}");
            assert!(matches!(normalise(&once), Ok(Cow::Borrowed(_))), "{once}");
        }
    }
}

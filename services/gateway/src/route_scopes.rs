//! `STANNA_ROUTE_SCOPES`: which scopes a proxied route requires of a scoped key.
//!
//! The file has one route per line, `METHOD PATH [SCOPE …]`, `#` starting a comment:
//!
//! ```text
//! GET    /v1/analytics              analytics:read
//! POST   /v1/analytics              analytics:write
//! *      /v1/projects/*/secrets     secrets:admin
//! GET    /v1/status
//! ```
//!
//! - `METHOD` is an HTTP method (`GET`, `POST`, …) or `*` for any; `HEAD` requests match `GET`
//!   lines too (a HEAD reads what a GET does).
//! - `PATH` is in the gateway's normal form ([`crate::path`]) and matches itself and every path
//!   below it, **on whole segments**: `/v1/admin` covers `/v1/admin` and `/v1/admin/users`, never
//!   `/v1/adminx`. A `*` segment matches any one segment.
//! - The scopes are all required. A line with none opens the route to every key, scoped or not.
//! - The most specific line wins: more segments, then more literal (non-`*`) segments, then an
//!   exact method over a `GET` line for a `HEAD` over `*`. Two lines that could tie (the same
//!   method and path, or overlapping `*` segments at the same specificity) are refused at start.
//!   A longer line wins over a shorter one even through a `*`: `* /v1/*/public` opens
//!   `/v1/admin/public` even with `* /v1/admin admin` in the file.
//! - Segments are compared without regard to ASCII case (`/v1/Admin` needs what `/v1/admin`
//!   needs), as many upstreams route case-insensitively: matching so errs on the side of the
//!   scope.
//!
//! A request no line matches is **unmapped**: only an unscoped key (its user's full permissions)
//! may make it; a scoped key is refused with 403 `insufficient_scope`. Without the file every
//! proxied route is unmapped. Matching uses the same normalised path that is forwarded, so
//! `//v1/admin`, `/v1/x/../admin`, `/v1/%61dmin` are `/v1/admin`, and `%2F` is refused before any
//! of this runs.

use std::path::Path;

use http::Method;

/// What a request needs of a key's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// A mapped route: a key must hold all of these (none: any key).
    Scopes(&'a [String]),
    /// No line matches: unscoped keys only.
    Unmapped,
}

/// The parsed file.
#[derive(Debug, Clone, Default)]
pub struct RouteScopes {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    /// `None` for `*`.
    method: Option<Method>,
    /// Segments; `None` for a `*` segment.
    segments: Vec<Option<String>>,
    scopes: Vec<String>,
    /// 1-based, for errors.
    line: usize,
}

impl Route {
    /// (segments, literal segments): more is more specific.
    fn specificity(&self) -> (usize, usize) {
        (
            self.segments.len(),
            self.segments.iter().filter(|s| s.is_some()).count(),
        )
    }

    /// How well the line's method fits `method`: 2 exact, 1 a `GET` line for a `HEAD` request,
    /// 0 `*`; `None` when it does not.
    fn method_rank(&self, method: &Method) -> Option<u8> {
        match &self.method {
            None => Some(0),
            Some(m) if m == method => Some(2),
            Some(m) if *m == Method::GET && *method == Method::HEAD => Some(1),
            Some(_) => None,
        }
    }

    /// Whether the line covers `path`: its segments are a prefix of the path's, compared
    /// without regard to ASCII case (many upstreams route case-insensitively; matching so errs
    /// on the side of requiring the scope).
    fn covers(&self, path: &str) -> bool {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        self.segments.iter().all(|want| match segments.next() {
            None => false,
            Some(got) => want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(got)),
        })
    }

    /// Whether some request would match both lines equally well (same specificity, a method
    /// both take at the same rank, segments that can all be equal): the file would then decide
    /// by line order, so it is refused.
    fn ties_with(&self, other: &Route) -> bool {
        let same_method = match (&self.method, &other.method) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        same_method
            && self.specificity() == other.specificity()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => true,
                })
    }
}

/// Why the file was refused, with its line.
#[derive(Debug, thiserror::Error)]
pub enum RouteScopesError {
    /// The file could not be read.
    #[error("STANNA_ROUTE_SCOPES: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is wrong.
    #[error("STANNA_ROUTE_SCOPES line {line}: {reason}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl RouteScopes {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`RouteScopesError`] naming the file or the line at fault.
    pub fn load(path: &Path) -> Result<Self, RouteScopesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RouteScopesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the file's text.
    ///
    /// # Errors
    /// [`RouteScopesError::Line`] for the first bad line.
    pub fn parse(text: &str) -> Result<Self, RouteScopesError> {
        let mut routes: Vec<Route> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |reason: String| RouteScopesError::Line { line, reason };
            let content = raw.split_once('#').map_or(raw, |(before, _)| before);
            let mut words = content.split_whitespace();
            let Some(method) = words.next() else {
                continue;
            };
            let method = match method {
                "*" => None,
                m => {
                    let parsed = Method::from_bytes(m.as_bytes())
                        .map_err(|_| bad(format!("{m:?} is not an HTTP method or '*'")))?;
                    if m.bytes().any(|b| b.is_ascii_lowercase()) {
                        return Err(bad(format!(
                            "methods are upper case: write {:?}",
                            m.to_ascii_uppercase()
                        )));
                    }
                    Some(parsed)
                }
            };
            let path = words
                .next()
                .ok_or_else(|| bad("expected METHOD PATH [SCOPE …], got no path".into()))?;
            let normal =
                crate::path::normalise(path).map_err(|e| bad(format!("path {path:?}: {e}")))?;
            if normal != path {
                return Err(bad(format!(
                    "path {path:?} is not in normal form: write {normal:?}"
                )));
            }
            let segments = path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| (s != "*").then(|| s.to_owned()))
                .collect();
            let scopes: Vec<String> = words.map(str::to_owned).collect();
            let parsed = stanna_keys::Scopes::parse(&scopes).map_err(|e| {
                bad(match e.index {
                    Some(i) => format!("scope {:?}: {}", scopes[i], e.reason),
                    None => e.reason.to_string(),
                })
            })?;
            let route = Route {
                method,
                segments,
                scopes: parsed.names().to_vec(),
                line,
            };
            if let Some(twin) = routes.iter().find(|r| r.ties_with(&route)) {
                let same = twin.segments.iter().zip(&route.segments).all(|(a, b)| {
                    a.as_deref().map(str::to_ascii_lowercase)
                        == b.as_deref().map(str::to_ascii_lowercase)
                });
                return Err(bad(if same {
                    format!(
                        "the same method and path as line {} (paths match without regard to case); merge their scopes into one line",
                        twin.line
                    )
                } else {
                    format!(
                        "matches some requests exactly as well as line {} does (their `*` segments overlap); make one of them more specific",
                        twin.line
                    )
                }));
            }
            routes.push(route);
        }
        // Most specific first: the best match is among the first lines that match.
        routes.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        Ok(Self { routes })
    }

    /// What `method` on the normalised `path` requires: the most specific line that covers it
    /// (more segments, then more literal ones, then an exact method over `GET`-for-`HEAD` over
    /// `*`; the file is refused where two could tie).
    pub fn requirement(&self, method: &Method, path: &str) -> Requirement<'_> {
        let mut best: Option<(&Route, u8)> = None;
        for route in &self.routes {
            if let Some((found, _)) = best
                && found.specificity() != route.specificity()
            {
                // Sorted: every later line is less specific.
                break;
            }
            let Some(rank) = route.method_rank(method) else {
                continue;
            };
            if best.is_none_or(|(_, r)| rank > r) && route.covers(path) {
                best = Some((route, rank));
            }
        }
        best.map_or(Requirement::Unmapped, |(r, _)| {
            Requirement::Scopes(&r.scopes)
        })
    }

    /// How many routes are mapped (for the start-up log line).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route is mapped.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
        # analytics
        GET   /v1/analytics          analytics:read
        POST  /v1/analytics          analytics:write   # writes
        *     /v1/admin              admin
        *     /v1/projects/*/secrets secrets:admin
        GET   /v1/projects           projects:read
        GET   /v1/status
    ";

    fn req<'a>(map: &'a RouteScopes, method: &str, path: &str) -> Requirement<'a> {
        map.requirement(&Method::from_bytes(method.as_bytes()).unwrap(), path)
    }

    fn scopes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn routes_match_on_whole_segments_and_the_most_specific_wins() {
        let map = RouteScopes::parse(FILE).unwrap();
        let read = scopes(&["analytics:read"]);
        assert_eq!(
            req(&map, "GET", "/v1/analytics"),
            Requirement::Scopes(&read)
        );
        assert_eq!(
            req(&map, "HEAD", "/v1/analytics/x"),
            Requirement::Scopes(&read)
        );
        assert_eq!(req(&map, "GET", "/v1/analyticsx"), Requirement::Unmapped);
        assert_eq!(req(&map, "DELETE", "/v1/analytics"), Requirement::Unmapped);
        let admin = scopes(&["admin"]);
        assert_eq!(
            req(&map, "PUT", "/v1/admin/users"),
            Requirement::Scopes(&admin)
        );
        assert_eq!(req(&map, "PUT", "/v1/adminx"), Requirement::Unmapped);
        assert_eq!(req(&map, "GET", "/v1"), Requirement::Unmapped);
        let secrets = scopes(&["secrets:admin"]);
        let projects = scopes(&["projects:read"]);
        assert_eq!(
            req(&map, "GET", "/v1/projects/p1/secrets/k"),
            Requirement::Scopes(&secrets),
            "the longer wildcard line beats the shorter literal one"
        );
        assert_eq!(
            req(&map, "GET", "/v1/projects/p1"),
            Requirement::Scopes(&projects)
        );
        assert_eq!(req(&map, "GET", "/v1/status"), Requirement::Scopes(&[]));
    }

    #[test]
    fn an_exact_method_beats_a_star_on_the_same_path() {
        let map = RouteScopes::parse("* /a x\nGET /a y").unwrap();
        assert_eq!(req(&map, "GET", "/a"), Requirement::Scopes(&scopes(&["y"])));
        assert_eq!(
            req(&map, "POST", "/a"),
            Requirement::Scopes(&scopes(&["x"]))
        );
        let all = RouteScopes::parse("* /").unwrap();
        assert_eq!(
            req(&all, "PATCH", "/anything/at/all"),
            Requirement::Scopes(&[])
        );
    }

    #[test]
    fn head_prefers_its_own_line_and_case_does_not_escape_a_scope() {
        let map =
            RouteScopes::parse("GET /a r\nHEAD /a\n* /v1/admin admin\n* /v1/*/public").unwrap();
        assert_eq!(req(&map, "HEAD", "/a"), Requirement::Scopes(&[]));
        assert_eq!(req(&map, "GET", "/a"), Requirement::Scopes(&scopes(&["r"])));
        let admin = scopes(&["admin"]);
        assert_eq!(req(&map, "GET", "/V1/Admin/x"), Requirement::Scopes(&admin));
        // A longer line wins, even through a `*` (documented).
        assert_eq!(
            req(&map, "GET", "/v1/admin/public"),
            Requirement::Scopes(&[])
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, says) in [
            ("GET", "got no path"),
            ("get /a", "upper case"),
            ("G(T /a", "not an HTTP method"),
            ("GET /a//b", "normal form: write \"/a/b\""),
            ("GET /a/../b", "normal form"),
            ("GET /a%2Fb", "encoded slash"),
            ("GET a", "must start with '/'"),
            ("GET /a Bad", "scope \"Bad\""),
            (
                "GET /a x\n\nGET /a/ y",
                "line 3: the same method and path as line 1",
            ),
            ("GET /a x\nGET /A y", "without regard to case"),
            (
                "* /v1/*/x a\n* /v1/y/* b",
                "line 2: matches some requests exactly as well as line 1",
            ),
        ] {
            let err = RouteScopes::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        assert!(
            RouteScopes::parse("# only a comment\n\n")
                .unwrap()
                .is_empty()
        );
    }
}

//! URLs as they may appear in logs and `--help`: the password replaced, parsed with the `url`
//! crate rather than by hand.

/// `url` without its password (`postgres://u:***@h/db`); text that is not a URL is returned as
/// it is (it holds no password part to hide). A comma-separated list (a Redis Cluster's seeds)
/// has each entry's password replaced.
pub fn url(text: &str) -> String {
    let list = text.starts_with("redis")
        && (text.contains(",redis://") || text.contains(",rediss://") || text.ends_with(','));
    if !list {
        return one(text);
    }
    // A seed list: each seed alone (a password holds no raw comma: `STANNA_REDIS_URL` takes
    // `%2C` there). A piece that is not a URL could be part of a password: never shown.
    text.split(',')
        .map(|seed| {
            if seed.is_empty() || url::Url::parse(seed).is_ok() {
                one(seed)
            } else {
                "***".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Query parameters that carry a password (PostgreSQL's `password=` and `sslpassword=`, which
/// sqlx and libpq take in the query as well as before the host).
const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];

fn one(text: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(text) else {
        // Not a URL the parser takes (a `#` or a space in a password, say): whatever stands
        // between the scheme and the last `@` may be credentials, so none of it is shown.
        return match text.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                let host = rest.rsplit_once('@').map_or("", |(_, host)| host);
                format!("{scheme}://***@{host}")
            }
            _ => text.to_owned(),
        };
    };
    let secret_query = parsed
        .query_pairs()
        .any(|(name, _)| SECRET_PARAMS.contains(&name.as_ref()));
    if parsed.password().is_none() && !secret_query {
        return text.to_owned();
    }
    if parsed.password().is_some() {
        // Cannot fail on a URL that already has a password (it has a host).
        let _ = parsed.set_password(Some("***"));
    }
    if secret_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if SECRET_PARAMS.contains(&name.as_ref()) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_are_kept_out_of_logged_urls() {
        assert_eq!(
            url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(url("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            url("redis://:s1@a:7000,redis://:s1@b:7001,"),
            "redis://:***@a:7000,redis://:***@b:7001,"
        );
        assert_eq!(url("rediss://:s1@cfg:6379,"), "rediss://:***@cfg:6379,");
        // A raw comma inside a password is not a list separator: still masked whole.
        assert_eq!(url("postgres://u:p,w@h/db"), "postgres://u:***@h/db");
        assert_eq!(url("redis://:p,w@h:6379"), "redis://:***@h:6379");
        assert_eq!(
            url("sqlite://stanna.db?mode=rwc"),
            "sqlite://stanna.db?mode=rwc"
        );
        // A URL the parser refuses still has its credentials masked.
        assert_eq!(
            url("postgres://u:pa#ss@h:5432/db"),
            "postgres://***@h:5432/db"
        );
        // A password in the query, as sqlx and libpq also take it.
        assert_eq!(
            url("postgres://u@h/db?sslmode=require&password=pw%21&sslpassword=k"),
            "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            url("postgres://u:a@h/db?password=b"),
            "postgres://u:***@h/db?password=***"
        );
    }
}

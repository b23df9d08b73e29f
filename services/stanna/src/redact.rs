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

fn one(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Cannot fail on a URL that already has a password (it has a host).
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => text.to_owned(),
    }
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
    }
}

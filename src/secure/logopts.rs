//! The query parameters of `/containerLogs` (a v1 PodLogOptions), parsed and validated the
//! way the kubelet does: a malformed or out-of-range value is an error naming the parameter.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// Only lines at or after this instant (from sinceSeconds or sinceTime).
    pub since: Option<Timestamp>,
}

/// Query booleans as the apiserver's conversion reads them: absent is false, "0" and "false"
/// (any case) are false, anything else (including an empty value) is true.
fn boolean(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

fn integer(name: &str, value: &str) -> Result<i64, String> {
    value.trim().parse::<i64>().map_err(|_| format!("invalid value for {name}: {value:?}: expected an integer"))
}

/// Parses the query pairs (first value of each name wins, as in Go's url.Values.Get).
pub fn parse(query: &[(String, String)], now: Timestamp) -> Result<LogOptions, String> {
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut opts = LogOptions {
        follow: get("follow").is_some_and(boolean),
        previous: get("previous").is_some_and(boolean),
        timestamps: get("timestamps").is_some_and(boolean),
        ..Default::default()
    };
    if let Some(v) = get("tailLines") {
        let n = integer("tailLines", v)?;
        if n < 0 {
            return Err(format!("tailLines: Invalid value: {n}: must be greater than or equal to 0"));
        }
        opts.tail_lines = Some(n as u64);
    }
    if let Some(v) = get("limitBytes") {
        let n = integer("limitBytes", v)?;
        if n < 1 {
            return Err(format!("limitBytes: Invalid value: {n}: must be greater than 0"));
        }
        opts.limit_bytes = Some(n as u64);
    }
    let since_seconds = get("sinceSeconds").map(|v| integer("sinceSeconds", v)).transpose()?;
    let since_time = get("sinceTime")
        .map(|v| v.parse::<Timestamp>().map_err(|e| format!("invalid value for sinceTime: {v:?}: expected an RFC3339 time: {e}")))
        .transpose()?;
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => return Err("at most one of sinceTime or sinceSeconds may be specified".into()),
        (Some(n), None) => {
            if n < 1 {
                return Err(format!("sinceSeconds: Invalid value: {n}: must be greater than 0"));
            }
            opts.since = Some(now.checked_sub(SignedDuration::from_secs(n)).unwrap_or(Timestamp::MIN));
        }
        (None, Some(t)) => opts.since = Some(t),
        (None, None) => {}
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn now() -> Timestamp {
        "2024-05-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn empty_query_is_the_defaults() {
        assert_eq!(parse(&[], now()).unwrap(), LogOptions::default());
    }

    #[test]
    fn booleans_read_like_the_apiserver() {
        let o = parse(&q(&[("follow", "true"), ("previous", "1"), ("timestamps", "")]), now()).unwrap();
        assert!(o.follow && o.previous && o.timestamps);
        let o = parse(&q(&[("follow", "false"), ("previous", "0"), ("timestamps", "FALSE")]), now()).unwrap();
        assert!(!o.follow && !o.previous && !o.timestamps);
    }

    #[test]
    fn numbers_are_parsed_and_checked() {
        let o = parse(&q(&[("tailLines", "5"), ("limitBytes", "100")]), now()).unwrap();
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.limit_bytes, Some(100));
        assert_eq!(parse(&q(&[("tailLines", "0")]), now()).unwrap().tail_lines, Some(0));
        let e = parse(&q(&[("tailLines", "x")]), now()).unwrap_err();
        assert!(e.contains("tailLines") && e.contains("\"x\""), "{e}");
        assert!(parse(&q(&[("tailLines", "-1")]), now()).unwrap_err().contains("tailLines"));
        assert!(parse(&q(&[("limitBytes", "0")]), now()).unwrap_err().contains("limitBytes"));
        assert!(parse(&q(&[("limitBytes", "1k")]), now()).unwrap_err().contains("limitBytes"));
        assert!(parse(&q(&[("sinceSeconds", "0")]), now()).unwrap_err().contains("sinceSeconds"));
    }

    #[test]
    fn since_seconds_and_since_time() {
        let o = parse(&q(&[("sinceSeconds", "60")]), now()).unwrap();
        assert_eq!(o.since, Some("2024-05-01T09:59:00Z".parse().unwrap()));
        let o = parse(&q(&[("sinceTime", "2024-05-01T11:00:00+02:00")]), now()).unwrap();
        assert_eq!(o.since, Some("2024-05-01T09:00:00Z".parse().unwrap()));
        assert!(parse(&q(&[("sinceTime", "yesterday")]), now()).unwrap_err().contains("sinceTime"));
        let e = parse(&q(&[("sinceTime", "2024-05-01T11:00:00Z"), ("sinceSeconds", "5")]), now()).unwrap_err();
        assert!(e.contains("at most one"), "{e}");
    }
}

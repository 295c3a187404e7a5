//! RPC URLs without their secrets, for printing.
//!
//! Node providers put API keys in the URL: as userinfo (`https://user:KEY@host`), in the query
//! (`?apikey=KEY`) or as a path segment (`https://host/v3/KEY`). Only the scheme, host and port
//! are ever printed: `https://host:port/…`, the `/…` standing for whatever path, query or fragment
//! was there.

use url::Url;

/// What is printed for an RPC URL that does not parse (its text could hold anything).
pub const UNPARSEABLE: &str = "<unparseable RPC URL>";

/// `url` as `scheme://host[:port]`, with `/…` when it had anything after the authority but a
/// bare `/`; userinfo is dropped.
///
/// ```
/// use paid_torrent_examples::redact::rpc_url;
/// assert_eq!(rpc_url("https://me:KEY@rpc.example:8443/v3/KEY?k=KEY"), "https://rpc.example:8443/…");
/// assert_eq!(rpc_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
/// ```
pub fn rpc_url(url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return UNPARSEABLE.to_owned();
    };
    let mut shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    let has_more = !matches!(parsed.path(), "" | "/")
        || parsed.query().is_some()
        || parsed.fragment().is_some();
    if has_more {
        shown.push_str("/…");
    }
    shown
}

/// `text` (e.g. an error message, which may quote the URL it failed on) with every occurrence
/// of `url`, as given or as normalized by a URL parser, replaced by [`rpc_url`], and every
/// secret-bearing part of it (userinfo, path and its segments, query, fragment) of at least
/// 4 characters that is still there replaced by
/// `…`.
///
/// ```
/// use paid_torrent_examples::redact::scrub;
/// let url = "http://me:pw@node:8545/KEY123?apikey=KEY456";
/// let error = format!("error sending request for url ({url}): refused");
/// assert_eq!(scrub(&error, url), "error sending request for url (http://node:8545/…): refused");
/// ```
pub fn scrub(text: &str, url: &str) -> String {
    let shown = rpc_url(url);
    let mut text = text.replace(url, &shown);
    let Ok(parsed) = Url::parse(url) else {
        return text;
    };
    // The URL as given, as a parser writes it, and as an HTTP client names it in its errors
    // (without userinfo); each also without a trailing `/`; the longest first.
    let mut without_userinfo = parsed.clone();
    let _ = without_userinfo.set_username("");
    let _ = without_userinfo.set_password(None);
    let mut forms = vec![parsed.to_string(), without_userinfo.to_string()];
    forms.extend(
        forms
            .clone()
            .iter()
            .filter_map(|f| f.strip_suffix('/').map(str::to_owned)),
    );
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    for form in forms {
        text = text.replace(&form, &shown);
    }
    let path = parsed.path();
    let parts = [
        Some(parsed.username()),
        parsed.password(),
        (!matches!(path, "" | "/")).then_some(path),
        parsed.query(),
        parsed.fragment(),
    ];
    let segments = parsed.path_segments().into_iter().flatten();
    // Very short parts (`/a`, `?x`, `v3`) would replace unrelated text and cannot hide much.
    for part in parts
        .into_iter()
        .flatten()
        .chain(segments)
        .filter(|p| p.len() >= 4)
    {
        text = text.replace(part, "…");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_host_and_port_are_shown() {
        for (url, shown) in [
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
            ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
            ("https://user:pass@node.example/", "https://node.example"),
            (
                "https://node.example/v3/0123456789abcdef",
                "https://node.example/…",
            ),
            (
                "https://node.example:8443/?apikey=s3cret",
                "https://node.example:8443/…",
            ),
            ("https://node.example/#s3cret", "https://node.example/…"),
            ("wss://user@[::1]:9000/ws/KEY", "wss://[::1]:9000/…"),
            ("not a url s3cret", UNPARSEABLE),
        ] {
            assert_eq!(rpc_url(url), shown, "{url}");
        }
    }

    #[test]
    fn no_secret_part_survives_scrubbing() {
        let url = "https://alice:hunter22@node.example:8443/v3/0123456789abcdef?apikey=s3cret#frag";
        let text = format!(
            "connect {url} failed; {} retried; key 0123456789abcdef, apikey=s3cret, hunter22, alice",
            Url::parse(url).unwrap()
        );
        let scrubbed = scrub(&text, url);
        for secret in ["hunter22", "alice", "0123456789abcdef", "s3cret", "frag"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(
            scrubbed.contains("https://node.example:8443/…"),
            "{scrubbed}"
        );
        // An HTTP client's error names the URL without its userinfo.
        let error = "error sending request for url (https://node.example:8443/v3/0123456789abcdef?apikey=s3cret#frag)";
        assert_eq!(
            scrub(error, url),
            "error sending request for url (https://node.example:8443/…)"
        );
        // A URL without secrets leaves the text as it was, but for the URL's own form.
        assert_eq!(
            scrub("at http://127.0.0.1:8545/ now", "http://127.0.0.1:8545"),
            "at http://127.0.0.1:8545 now"
        );
    }
}

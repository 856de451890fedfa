//! The `next` target check (`safe_next`). Whatever it accepts is a path on the site: it starts
//! with one `/` and not `//` or `/\`, has no scheme and no control characters (also once
//! decoded), and a browser resolving it against `https://site.example/` stays on
//! `site.example` (both the WHATWG model in `pagegate_fuzz::browser` and the `url` crate say so).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pagegate::auth::input::safe_next;
use pagegate_fuzz::browser::{Resolved, resolve};

static BASE: LazyLock<url::Url> =
    LazyLock::new(|| url::Url::parse("https://site.example/_pagegate/login").expect("base"));

fuzz_target!(|data: &[u8]| {
    let raw = match std::str::from_utf8(data) {
        Ok(text) => text.to_owned(),
        Err(_) => pagegate_fuzz::path_from_tokens(data),
    };
    let Some(next) = safe_next(&raw) else {
        return;
    };
    assert_eq!(next, raw, "the target is kept as given");
    assert!(next.starts_with('/'), "{next:?}");
    let mut text = next.to_owned();
    for round in 0..3 {
        assert!(
            !text.starts_with("//") && !text.starts_with("/\\"),
            "{next:?} round {round}"
        );
        assert!(
            !text.chars().any(char::is_control),
            "{next:?} round {round}"
        );
        match resolve(text.as_bytes()) {
            Resolved::Path(_) => {}
            other => panic!("{next:?} (decoded {round} times: {text:?}) resolves to {other:?}"),
        }
        text = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
    }
    let joined = BASE.join(next).unwrap_or_else(|e| panic!("{next:?}: {e}"));
    assert_eq!(joined.scheme(), "https", "{next:?}");
    assert_eq!(
        joined.host_str(),
        Some("site.example"),
        "{next:?} leads to {joined}"
    );
    assert_eq!(joined.port(), None, "{next:?}");
    assert!(
        joined.username().is_empty() && joined.password().is_none(),
        "{next:?}"
    );
    // What the browser is sent to is the path given, not merely some path on the site.
    let http_uri: Result<http::Uri, _> = next.parse();
    if let Ok(uri) = http_uri {
        assert!(uri.host().is_none(), "{next:?} parses as {uri} with a host");
    }
});

//! Reading pagegate's signed cookies and keeping them from the upstream, on any `Cookie`
//! headers. A value signed under one key verifies under that key only, and is found among any
//! other cookies; `Keys::read_cookie` names the key that signed it. After `strip_own`, no cookie
//! name the upstream reads contains pagegate's marker, and every other cookie is kept.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pagegate::auth::cookies::{CookieNames, read_signed_any, set_signed, strip_own};
use pagegate::auth::keys::{CookiePurpose, KeySet, Keys};

const CURRENT: &str = "current secret: 0123456789abcdef0123456789abcdef";
const PREVIOUS: &str = "previous secret: fedcba9876543210fedcba9876543210";
const STRANGER: &str = "a secret pagegate was never given: 0123456789abcdef";

/// The current secret and one previous secret, as a rotated configuration has them.
static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n[[site]]\nhosts = [\"a\"]\nupstream = \"http://a\"\n\
         [auth]\nsecret = \"{CURRENT}\"\nprevious_secrets = [\"{PREVIOUS}\"]\n"
    );
    let config = pagegate::config::parse_str(&text, Path::new("fuzz.toml"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"));
    Keys::load(&config.auth, Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e}"))
});
static SETS: LazyLock<[KeySet; 3]> =
    LazyLock::new(|| [CURRENT, PREVIOUS, STRANGER].map(|s| KeySet::from_master(s.as_bytes())));

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    site: &'a str,
    value: &'a str,
    secure: bool,
    csrf: bool,
    signer: u8,
    before: &'a [u8],
    after: &'a [u8],
    others: Vec<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    let names = CookieNames::for_site(input.site);
    let (name, purpose, other_purpose) = if input.csrf {
        (
            names.csrf(input.secure),
            CookiePurpose::Csrf,
            CookiePurpose::Session,
        )
    } else {
        (
            names.session(input.secure),
            CookiePurpose::Session,
            CookiePurpose::Csrf,
        )
    };
    let sets = &*SETS;
    let [current, previous, stranger] = [0, 1, 2].map(|i| sets[i].cookie_key(purpose));

    // Whatever the headers hold, nothing verifies that was not signed here.
    let mut plain = HeaderMap::new();
    for line in input.others.iter().chain([&input.before, &input.after]) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            plain.append(COOKIE, v);
        }
    }
    assert_eq!(
        read_signed_any(&plain, name, &[current, previous, stranger]),
        None
    );
    check_stripped(&plain);

    let signer = usize::from(input.signer % 3);
    let Some(set_cookie) = set_signed(
        name,
        input.value,
        input.secure,
        cookie::SameSite::Lax,
        None,
        sets[signer].cookie_key(purpose),
    ) else {
        return;
    };
    let Ok(set_cookie) = set_cookie.to_str() else {
        panic!("a Set-Cookie value that is not text: {set_cookie:?}");
    };
    let pair = set_cookie.split(';').next().unwrap_or_default();
    let mut headers = plain.clone();
    let mut line = input.before.to_vec();
    line.extend_from_slice(b"; ");
    line.extend_from_slice(pair.as_bytes());
    line.extend_from_slice(b"; ");
    line.extend_from_slice(input.after);
    match HeaderValue::from_bytes(&line) {
        Ok(v) if v.to_str().is_ok() => headers.append(COOKIE, v),
        _ => headers.append(COOKIE, HeaderValue::from_str(pair).expect("a cookie pair")),
    };

    // Verified under the signing key only, wherever it is in the list.
    let value = input.value.to_owned();
    let expected = |index: usize| Some((value.clone(), index));
    let verdicts = [
        read_signed_any(&headers, name, &[current]),
        read_signed_any(&headers, name, &[stranger, previous, current]),
        read_signed_any(&headers, name, &[previous]),
    ];
    match signer {
        0 => assert_eq!(verdicts, [expected(0), expected(2), None]),
        1 => assert_eq!(verdicts, [None, expected(1), expected(0)]),
        _ => assert_eq!(verdicts, [None, expected(0), None]),
    }
    let other = CookieNames::for_site(&format!("{}-other", input.site));
    assert_eq!(
        read_signed_any(
            &headers,
            other.session(input.secure),
            &[current, previous, stranger]
        ),
        None
    );

    // Signed for one purpose, it verifies for no other.
    assert_eq!(
        KEYS.read_cookie(&headers, name, other_purpose)
            .map(|(v, _)| v),
        None
    );
    // The configured keys: current first, then the previous one; the stranger is refused.
    match (signer, KEYS.read_cookie(&headers, name, purpose)) {
        (2, None) => {}
        (2, Some(_)) => panic!("a cookie signed under a key pagegate does not have was accepted"),
        (_, None) => panic!("a cookie signed under an accepted key was refused"),
        (i, Some((read, by))) => {
            assert_eq!(read, input.value);
            assert_eq!(
                by.hash("x", &[b"1"]),
                sets[i].hash("x", &[b"1"]),
                "signed by key {i}"
            );
        }
    }
    check_stripped(&headers);
});

/// After `strip_own`, the cookies left are exactly the pairs without the marker in their name,
/// as RFC 6265 reads a `Cookie` header (pairs separated by `;`, the name up to the first `=`).
fn check_stripped(headers: &HeaderMap) {
    let pairs = |h: &HeaderMap| -> Vec<String> {
        h.get_all(COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .filter_map(|p| std::str::from_utf8(p).ok())
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let ours = |pair: &str| {
        let name = pair.split('=').next().unwrap_or_default();
        name.to_ascii_lowercase().contains("pagegate-")
    };
    let before = pairs(headers);
    let mut stripped = headers.clone();
    strip_own(&mut stripped);
    let after = pairs(&stripped);
    for pair in &after {
        assert!(!ours(pair), "{pair:?} left in {after:?}");
    }
    let kept: Vec<&String> = before.iter().filter(|p| !ours(p)).collect();
    assert_eq!(
        after.iter().collect::<Vec<_>>(),
        kept,
        "other cookies are kept, in order"
    );
}

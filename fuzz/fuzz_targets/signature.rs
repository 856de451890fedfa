//! The grant endpoint's `Pagegate-Signature: t=…,v1=…` header and its check. Any header and
//! body: never panics, and nothing is accepted that was not signed. A header signed for one body
//! verifies for that body only (not for any other, whatever the timestamp's spelling), within
//! five minutes of its time, and once.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pagegate::api::keys::{
    Credentials, KeyRing, TOLERANCE, credentials, encode_hex, sign, signature_header,
};
use pagegate::config::Config;

const NOW: i64 = 1_700_000_000;
const SECRETS: [&str; 2] = ["0123456789abcdef01234567", "abcdef0123456789abcdef01"];

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n\
         [[site]]\nhosts = [\"a\"]\nupstream = \"http://127.0.0.1:2\"\n\
         [[api_key]]\nname = \"shop\"\nsecret = \"{}\"\nscopes = [\"grant\"]\n\
         [[api_key]]\nname = \"other\"\nsecret = \"{}\"\nscopes = [\"grant\"]\n",
        SECRETS[0], SECRETS[1]
    );
    pagegate::config::parse_str(&text, Path::new("fuzz.toml"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"))
});

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    header: &'a str,
    body: &'a [u8],
    other_body: &'a [u8],
    signer: bool,
    age: i16,
    t_spelling: u8,
    extra: &'a str,
    authorization: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    // A new ring each time: what one input spends does not leak into the next.
    let ring = KeyRing::new(&CONFIG);

    // Any header: nothing verifies that no key signed.
    if let Ok((key, _)) = ring.signature(input.header, input.body, NOW) {
        let secret = SECRETS[usize::from(key.name != "shop")];
        let lower = input.header.to_ascii_lowercase();
        let signed = input.header.split(',').any(|item| {
            item.split_once('=').is_some_and(|(name, t)| {
                name.trim() == "t"
                    && lower.contains(&encode_hex(&sign(secret, t.trim(), input.body)))
            })
        });
        assert!(signed, "{:?} accepted for {:?}", input.header, input.body);
    }

    // A real signature, its timestamp spelt as the sender chose, with other entries around it.
    let secret = SECRETS[usize::from(input.signer)];
    let t = NOW + i64::from(input.age) % (2 * TOLERANCE);
    let t_text = match input.t_spelling % 3 {
        0 => t.to_string(),
        1 => format!("0{t}"),
        _ => format!("00{t}"),
    };
    let mac = encode_hex(&sign(secret, &t_text, input.body));
    let extra = input.extra.replace(['t', 'v'], "x");
    let header = match input.t_spelling % 4 {
        0 => format!("t={t_text},v1={mac}"),
        1 => format!("v1={mac}, t={t_text}"),
        2 => format!("t={t_text},{extra}=1,v1={mac}"),
        _ => format!("t={t_text},v1={},v1={mac}", "0".repeat(64)),
    };
    if input.other_body != input.body {
        let refused = ring.signature(&header, input.other_body, NOW);
        assert!(
            refused.is_err(),
            "{header:?} for {:?} accepted for {:?}",
            input.body,
            input.other_body
        );
    }
    let fresh = (NOW - t).abs() <= TOLERANCE;
    // Entries before the last one of `extra` need their own `=`; the last one gets `=1`.
    let items: Vec<&str> = extra.split(',').collect();
    let parses =
        input.t_spelling % 4 != 2 || items[..items.len() - 1].iter().all(|i| i.contains('='));
    match ring.signature(&header, input.body, NOW) {
        Ok((key, spent)) => {
            assert!(fresh, "{header:?}: a stale signature accepted");
            assert_eq!(key.secret.0, secret);
            // A second use is refused by the store, which knows it by this hash: the same
            // signature must always come to the same hash, and stay spent until it is stale.
            let again = ring.signature(&header, input.body, NOW).map(|(_, s)| s);
            assert_eq!(
                again.as_ref().map(|s| (s.hash, s.until)).ok(),
                Some((spent.hash, spent.until)),
                "{header:?} spent under two hashes"
            );
            assert!(spent.until >= t, "{header:?}: forgotten before it is stale");
        }
        Err(e) => assert!(!fresh || !parses, "{header:?} refused: {e}"),
    }
    if input.t_spelling % 3 == 0 {
        assert_eq!(
            signature_header(secret, t, input.body),
            format!("t={t},v1={mac}")
        );
    }

    // The credentials headers, whatever their bytes.
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(input.authorization) {
        headers.append("authorization", v);
    }
    if let Ok(v) = HeaderValue::from_str(input.header) {
        headers.append("pagegate-signature", v);
    }
    if let Ok(Credentials::Bearer(token)) = credentials(&headers) {
        assert!(!token.is_empty() && token.trim() == token, "{token:?}");
    }
});

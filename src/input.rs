//! Checks on what people type or send back: email addresses and `next` targets. Low in the
//! tree because the configuration (admin addresses), the sign-in flow and the admin interfaces
//! all read emails the same way.

use percent_encoding::percent_decode_str;

/// The canonical form of an email address: trimmed and lower-cased, checked for syntax.
/// Comparing canonical forms makes `Ann@Example.COM` and `ann@example.com` one client.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    if email.len() > 254 || email.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    email.parse::<lettre::Address>().ok().map(|_| email)
}

/// An address as the link confirm page shows it: enough for its owner to recognise (the first
/// characters of the local part and the whole domain), not the whole address to whoever looks at
/// the screen.
pub fn mask_email(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let shown = if local.chars().count() > 3 { 2 } else { 1 };
    let start: String = local.chars().take(shown).collect();
    format!("{start}***@{domain}")
}

/// `next` if it is a path on this site, else `None`. Anything that a browser could read as
/// another origin (`//evil`, `/\evil`, `https://…`, their encoded forms) is refused.
pub fn safe_next(raw: &str) -> Option<&str> {
    if raw.is_empty() || raw.len() > 2048 || !raw.starts_with('/') {
        return None;
    }
    if raw
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'\\' || b == b' ' || b >= 0x80)
    {
        return None;
    }
    let second = raw.as_bytes().get(1).copied();
    if matches!(second, Some(b'/')) {
        return None;
    }
    // Decode repeatedly: a target that becomes dangerous once a server or browser decodes it
    // is dangerous now.
    let mut decoded = raw.to_string();
    for _ in 0..3 {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next.starts_with("//")
            || next.starts_with("/\\")
            || next.contains("\\")
            || next.chars().any(char::is_control)
        {
            return None;
        }
        if next == decoded {
            break;
        }
        decoded = next;
    }
    Some(raw)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn masked_addresses_keep_a_start_and_the_domain() {
        assert_eq!(mask_email("anna@example.com"), "an***@example.com");
        assert_eq!(mask_email("ann@example.com"), "a***@example.com");
        assert_eq!(mask_email("анна@пример.рф"), "ан***@пример.рф");
    }

    #[test]
    fn emails_are_canonical() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(
            normalize_email("a.b+tag@sub.example.org").as_deref(),
            Some("a.b+tag@sub.example.org")
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "a b@example.com",
            "ann@exa mple.com",
            "a@b@c",
            "ann@example.com\r\nBcc: x@y",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn next_stays_on_the_site() {
        for ok in ["/", "/course/", "/course/lesson?x=1&y=%2F", "/a%20b"] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2fevil.example",
            "/%2F%2Fevil.example",
            "/%5cevil.example",
            "/%252f%252fevil.example",
            "javascript:alert(1)",
            "/\t/evil.example",
            "/%09/evil.example",
            "",
            "course",
            "/ok\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}

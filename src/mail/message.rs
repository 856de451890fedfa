//! Building the RFC 5322 message: headers, `multipart/alternative` body, UTF-8 throughout.

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::{MailError, Outgoing};

/// Builds the message for `out`, from `from`. Returns it with the parsed recipient mailbox.
pub(super) fn build(from: &Mailbox, out: &Outgoing) -> Result<(Message, Mailbox), MailError> {
    let address = out
        .to
        .trim()
        .parse::<lettre::Address>()
        .map_err(|_| MailError::Message("the recipient is not a valid email address".into()))?;
    let name = out
        .to_name
        .as_deref()
        .map(one_line)
        .filter(|n| !n.is_empty());
    let recipient = Mailbox::new(name, address);
    let email = Message::builder()
        .from(from.clone())
        .to(recipient.clone())
        .subject(one_line(&out.subject))
        .message_id(Some(message_id(from)))
        .date_now()
        // RFC 3834: tells vacation responders and the like not to answer.
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_string(),
        ))
        .multipart(MultiPart::alternative_plain_html(
            out.text.clone(),
            out.html.clone(),
        ))
        .map_err(|e| MailError::Message(e.to_string()))?;
    Ok((email, recipient))
}

/// A header value on one line: control characters (CR and LF above all, which could smuggle
/// extra headers in) become spaces.
pub(super) fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `<random@sender-domain>`: the sender's domain rather than this machine's host name, which in
/// a container is a meaningless id and leaks internal names.
fn message_id(from: &Mailbox) -> String {
    format!(
        "<{:032x}.pagegate@{}>",
        rand::random::<u128>(),
        from.email.domain()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_stay_on_one_line() {
        assert_eq!(
            one_line("Hi\r\nBcc: x@example.net"),
            "Hi  Bcc: x@example.net"
        );
        assert_eq!(one_line("  Код\tвхода \n"), "Код входа");
    }

    #[test]
    fn messages_carry_both_parts_and_an_id() {
        let from: Mailbox = "School <no-reply@school.example>".parse().expect("mailbox");
        let (email, to) = build(
            &from,
            &Outgoing {
                to: " anna@example.org ".into(),
                to_name: Some("Анна".into()),
                subject: "Ваш код".into(),
                text: "123456".into(),
                html: "<b>123456</b>".into(),
            },
        )
        .expect("builds");
        assert_eq!(to.email.to_string(), "anna@example.org");
        let raw = String::from_utf8(email.formatted()).expect("ascii");
        assert!(raw.is_ascii(), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        assert!(raw.contains(".pagegate@school.example>"), "{raw}");
        assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
    }

    #[test]
    fn a_bad_recipient_is_a_message_error() {
        let from: Mailbox = "no-reply@school.example".parse().expect("mailbox");
        for to in [
            "",
            "anna",
            "anna@",
            "a b@example.org",
            "anna@example.org\r\nBcc: x@y.z",
        ] {
            let out = Outgoing {
                to: to.into(),
                to_name: None,
                subject: "s".into(),
                text: "t".into(),
                html: "h".into(),
            };
            assert!(
                matches!(build(&from, &out), Err(MailError::Message(_))),
                "{to:?}"
            );
        }
    }
}

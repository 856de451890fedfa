//! The two transports that stay on this machine: `console` (standard output) and `file` (one
//! `.eml` per message in a folder).

use std::io::Write;
use std::path::{Path, PathBuf};

use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::one_line;
use super::{MailError, Outgoing};

const BANNER: &str =
    "==================== pagegate mail (console transport: not sent) ====================";
const END: &str = "==================== end of mail ====================";

/// Prints the message in readable form on standard output: the one-time code appears there on
/// purpose (demo, development). The write happens on tokio's blocking pool, as a full pipe on
/// stdout would otherwise stall the runtime.
pub(super) async fn print(
    from: &Mailbox,
    recipient: &Mailbox,
    message: &Outgoing,
) -> Result<(), MailError> {
    let mut text = String::with_capacity(message.text.len() + 512);
    text.push('\n');
    text.push_str(BANNER);
    text.push('\n');
    text.push_str(&format!("From: {}\n", show(from)));
    text.push_str(&format!("To: {}\n", show(recipient)));
    text.push_str(&format!("Subject: {}\n\n", one_line(&message.subject)));
    // Keep line breaks and tabs; drop other control characters (terminal escapes).
    text.extend(
        message
            .text
            .chars()
            .filter(|c| !c.is_control() || matches!(c, '\n' | '\t')),
    );
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(END);
    text.push_str("\n\n");
    let written = tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(MailError::Send {
            transient: false,
            detail: format!("cannot write to standard output: {e}"),
        }),
        Err(e) => Err(MailError::Send {
            transient: true,
            detail: format!("writing to standard output did not finish: {e}"),
        }),
    }
}

fn show(mailbox: &Mailbox) -> String {
    match &mailbox.name {
        Some(name) => format!("{} <{}>", one_line(name), mailbox.email),
        None => mailbox.email.to_string(),
    }
}

/// One `.eml` file per message in a folder.
pub(super) struct FileSink {
    dir: PathBuf,
    transport: AsyncFileTransport<Tokio1Executor>,
}

impl FileSink {
    /// Creates the folder (0700 on unix: the files hold codes) if it is missing.
    pub(super) fn new(dir: &Path) -> Result<FileSink, MailError> {
        create_dir(dir).map_err(|e| {
            MailError::Setup(format!(
                "cannot create the mail folder {}: {e}",
                dir.display()
            ))
        })?;
        Ok(FileSink {
            dir: dir.to_path_buf(),
            transport: AsyncFileTransport::new(dir),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("file ({})", self.dir.display())
    }

    pub(super) async fn send(&self, email: Message) -> Result<(), MailError> {
        // The folder may have been removed since start; recreate it rather than fail.
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || create_dir(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(file_error(&self.dir, e.kind(), &e)),
            Err(e) => {
                return Err(MailError::Send {
                    transient: true,
                    detail: format!("creating {} did not finish: {e}", self.dir.display()),
                });
            }
        }
        self.transport.send(email).await.map(drop).map_err(|e| {
            match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
                Some(io) => file_error(&self.dir, io.kind(), io),
                None => file_error(&self.dir, std::io::ErrorKind::Other, &e),
            }
        })
    }
}

fn file_error(dir: &Path, kind: std::io::ErrorKind, cause: &dyn std::fmt::Display) -> MailError {
    use std::io::ErrorKind;
    MailError::Send {
        // A full disk may be freed; a folder pagegate may not write to stays so until an admin acts.
        transient: !matches!(
            kind,
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem | ErrorKind::NotADirectory
        ),
        detail: format!("cannot write a message into {}: {cause}", dir.display()),
    }
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

//! Mail: what the account flows send, how it is written, and how it leaves.
//!
//! Every message goes through the `outbox` table (`outbox`): a flow queues a row naming the kind
//! of message and its recipient, and the sender (`Identity::deliver_mail`, run by the service
//! on every replica) claims due rows, makes their links, renders them from the templates under
//! `templates/mail/` and hands them to the transport: SMTP through lettre, or `.eml` files in a
//! directory when no SMTP server is configured (the embedded default). The database therefore
//! never holds a link's token, only its hash (`accounts`).
//!
//! Templates are plain text and HTML with `{{name}}` placeholders, filled here by hand (a dozen
//! lines; values are HTML-escaped in the HTML part). A template engine would be a dependency
//! for four fixed messages.

pub(crate) mod outbox;

use std::{path::Path, time::Duration};

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        AsyncSmtpTransportBuilder,
        client::{Certificate, Tls, TlsParameters},
    },
};

use crate::{
    error::{CoreError, CoreResult},
    settings::EmailSettings,
};

pub use outbox::{MailObserver, MailOutcome};

/// What a queued message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A verification link to the account's address (sign-up, resend).
    Verify,
    /// A password-reset link.
    Reset,
    /// A confirmation link to the address the account is moving to.
    EmailChange,
    /// A notice to the old address that a change was asked for.
    EmailChangeNotice,
}

impl MailKind {
    pub const ALL: [MailKind; 4] =
        [MailKind::Verify, MailKind::Reset, MailKind::EmailChange, MailKind::EmailChangeNotice];

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Verify => "verify",
            MailKind::Reset => "reset",
            MailKind::EmailChange => "email_change",
            MailKind::EmailChangeNotice => "email_change_notice",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        MailKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    fn subject(self) -> &'static str {
        match self {
            MailKind::Verify => "Verify your email address",
            MailKind::Reset => "Reset your password",
            MailKind::EmailChange => "Confirm your new email address",
            MailKind::EmailChangeNotice => "Your email address is being changed",
        }
    }

    fn templates(self) -> (&'static str, &'static str) {
        match self {
            MailKind::Verify => {
                (include_str!("../../templates/mail/verify.txt"), include_str!("../../templates/mail/verify.html"))
            }
            MailKind::Reset => {
                (include_str!("../../templates/mail/reset.txt"), include_str!("../../templates/mail/reset.html"))
            }
            MailKind::EmailChange => (
                include_str!("../../templates/mail/email_change.txt"),
                include_str!("../../templates/mail/email_change.html"),
            ),
            MailKind::EmailChangeNotice => (
                include_str!("../../templates/mail/email_change_notice.txt"),
                include_str!("../../templates/mail/email_change_notice.html"),
            ),
        }
    }
}

/// A message ready to leave.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub kind: MailKind,
    pub to: String,
    /// The placeholders' values.
    pub values: Vec<(&'static str, String)>,
    /// The link in it, if any (logged when written to a file, never when sent).
    pub link: Option<String>,
}

impl Letter {
    /// The text and HTML bodies.
    fn render(&self) -> (String, String) {
        let (text, html) = self.kind.templates();
        (fill(text, &self.values, |value| value.to_owned()), fill(html, &self.values, escape_html))
    }
}

/// `template` with every `{{name}}` replaced by its value (`encode`d), in one pass: a value
/// that itself holds `{{…}}` (a username may) stays as written. Unknown names stay too.
fn fill(template: &str, values: &[(&'static str, String)], encode: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after
            .find("}}")
            .and_then(|end| values.iter().find(|(name, _)| *name == &after[..end]).map(|(_, value)| (end, value)));
        match value {
            Some((end, value)) => {
                out.push_str(&encode(value));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How long a link lives, as a reader would say it: `1 hour`, `3 days`, `90 minutes`.
pub(crate) fn lifetime(duration: Duration) -> String {
    let seconds = duration.as_secs().max(1);
    let (count, unit) = match seconds {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{count} {unit}{}", if count == 1 { "" } else { "s" })
}

/// Where messages go.
pub(crate) enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory (made, readable by the owner only, at the first message);
    /// each link is also logged.
    Files(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
}

/// How long one SMTP exchange may take before the attempt counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

impl Transport {
    pub(crate) fn new(settings: &EmailSettings) -> CoreResult<Self> {
        match smtp_builder(settings)? {
            Some(builder) => Ok(Transport::Smtp(builder.timeout(Some(SMTP_TIMEOUT)).build())),
            None => {
                let dir = settings.outbox_dir.clone();
                Ok(Transport::Files(AsyncFileTransport::new(&dir), dir))
            }
        }
    }

    /// Hands `letter` over (from `from`). The error text is for logs and the outbox row: it
    /// never holds the message.
    pub(crate) async fn send(&self, from: &Mailbox, letter: &Letter) -> Result<(), String> {
        let to: Mailbox = letter.to.parse().map_err(|error| format!("recipient: {error}"))?;
        let (text, html) = letter.render();
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(letter.kind.subject())
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|error| format!("building the message: {error}"))?;
        match self {
            Transport::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|error| error.to_string()),
            Transport::Files(files, dir) => {
                crate::store::owner_only_dirs(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
                let id = files.send(message).await.map_err(|error| error.to_string())?;
                tracing::info!(
                    kind = letter.kind.as_str(),
                    to = %letter.to,
                    file = %format!("{id}.eml"),
                    link = letter.link.as_deref().unwrap_or(""),
                    "mail written to the outbox directory (no IDENTITY_SMTP_URL)"
                );
                Ok(())
            }
        }
    }
}

// === Settings checks ===

/// The sender's address, as configured.
pub(crate) fn parse_from(field: &'static str, from: &str) -> CoreResult<Mailbox> {
    from.parse::<Mailbox>()
        .map_err(|error| CoreError::invalid(field, format!("is not an address (`Name <a@b.c>` or `a@b.c`): {error}")))
}

/// An `http(s)://` URL without query or fragment: links are this plus a path.
pub(crate) fn check_public_url(field: &'static str, public_url: &str) -> CoreResult<()> {
    let url = url::Url::parse(public_url).map_err(|error| CoreError::invalid(field, error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(CoreError::invalid(field, "must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CoreError::invalid(field, "must have no query or fragment"));
    }
    Ok(())
}

const SMTP_URL: &str = "email.smtp_url";
const SMTP_CA: &str = "email.smtp_ca";

/// The SMTP transport `settings` name, not built yet (building starts its connection pool,
/// which needs a runtime; checking the settings does not): lettre's from the URL, its TLS
/// trusting the certificates of `smtp_ca` besides the system's roots when that is set. None
/// without an SMTP URL. Every error names its setting, and none holds the URL's password.
pub(crate) fn smtp_builder(settings: &EmailSettings) -> CoreResult<Option<AsyncSmtpTransportBuilder>> {
    let Some(url) = &settings.smtp_url else {
        return match settings.smtp_ca {
            Some(_) => Err(CoreError::invalid(SMTP_CA, "is set but there is no SMTP URL to use it for")),
            None => Ok(None),
        };
    };
    let parsed = url::Url::parse(url.expose()).map_err(|_| CoreError::invalid(SMTP_URL, "is not a URL"))?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") {
        return Err(CoreError::invalid(SMTP_URL, "must start with smtp:// or smtps://"));
    }
    // lettre decides the rest (host, port, `tls=`); its message never holds the password.
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
        .map_err(|error| CoreError::invalid(SMTP_URL, error.to_string()))?;
    if let Some(ca) = &settings.smtp_ca {
        let tls = tls_of(&parsed).ok_or_else(|| {
            CoreError::invalid(SMTP_CA, "needs an SMTP URL that speaks TLS: smtps:// or smtp://…?tls=required")
        })?;
        // from_url has checked that there is a host.
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let parameters = TlsParameters::builder(host)
            .add_root_certificate(certificates(ca)?)
            .build_rustls()
            .map_err(|error| CoreError::invalid(SMTP_CA, error.to_string()))?;
        builder = builder.tls(tls(parameters));
    }
    Ok(Some(builder))
}

/// How `url` asks lettre to speak TLS (None: plaintext), as lettre reads it.
fn tls_of(url: &url::Url) -> Option<fn(TlsParameters) -> Tls> {
    let tls = url.query_pairs().find(|(name, _)| name == "tls").map(|(_, value)| value.into_owned());
    match (url.scheme(), tls.as_deref()) {
        ("smtps", _) => Some(Tls::Wrapper),
        ("smtp", Some("required")) => Some(Tls::Required),
        ("smtp", Some("opportunistic")) => Some(Tls::Opportunistic),
        _ => None,
    }
}

/// The PEM certificates in `path` (at least one).
fn certificates(path: &Path) -> CoreResult<Certificate> {
    let pem =
        std::fs::read(path).map_err(|error| CoreError::invalid(SMTP_CA, format!("{}: {error}", path.display())))?;
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(BEGIN.len()).any(|window| window == BEGIN) {
        return Err(CoreError::invalid(SMTP_CA, format!("{}: holds no PEM certificate", path.display())));
    }
    Certificate::from_pem(&pem).map_err(|error| CoreError::invalid(SMTP_CA, format!("{}: {error}", path.display())))
}

/// The base of links: the public URL without its trailing slash.
pub(crate) fn base(public_url: &str) -> &str {
    public_url.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;

    #[test]
    fn placeholders_are_filled_and_escaped_in_html_only() {
        let letter = Letter {
            kind: MailKind::Verify,
            to: "a@example.com".into(),
            values: vec![
                ("username", "<b>ann</b>".into()),
                ("email", "a@example.com".into()),
                ("link", "https://id.example.com/account/verify-email?key=abc".into()),
                ("expires", "3 days".into()),
            ],
            link: None,
        };
        let (text, html) = letter.render();
        assert!(text.contains("Hello <b>ann</b>,"));
        assert!(text.contains("https://id.example.com/account/verify-email?key=abc"));
        assert!(html.contains("Hello &lt;b&gt;ann&lt;/b&gt;,"));
        assert!(!text.contains("{{") && !html.contains("{{"), "{text}{html}");
    }

    #[test]
    fn a_value_holding_a_placeholder_is_not_filled_again() {
        let values = vec![("username", "{{link}}".to_owned()), ("link", "https://x.example/".to_owned())];
        let filled = fill("Hi {{username}}, {{link}} {{unknown}} {{", &values, str::to_owned);
        assert_eq!(filled, "Hi {{link}}, https://x.example/ {{unknown}} {{");
    }

    #[test]
    fn lifetimes_read_as_people_say_them() {
        assert_eq!(lifetime(Duration::from_secs(3600)), "1 hour");
        assert_eq!(lifetime(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(lifetime(Duration::from_secs(90 * 60)), "90 minutes");
        assert_eq!(lifetime(Duration::from_secs(5)), "5 seconds");
    }

    #[test]
    fn settings_are_checked() {
        assert!(parse_from("from", "Identity <no-reply@example.com>").is_ok());
        assert!(parse_from("from", "not an address").is_err());
        assert!(check_public_url("public_url", "https://id.example.com/auth").is_ok());
        assert!(check_public_url("public_url", "ftp://id.example.com").is_err());
        assert!(check_public_url("public_url", "https://id.example.com/?next=x").is_err());
        let smtp = |url: Option<&str>, ca: Option<&str>| {
            let settings = EmailSettings {
                smtp_url: url.map(Secret::new),
                smtp_ca: ca.map(std::path::PathBuf::from),
                ..EmailSettings::default()
            };
            smtp_builder(&settings).map(|builder| builder.is_some())
        };
        let refused = |url: Option<&str>, ca: Option<&str>| match smtp(url, ca) {
            Err(error @ CoreError::Invalid(_)) => error.to_string(),
            other => panic!("{url:?} {ca:?} accepted: {other:?}"),
        };
        assert!(matches!(smtp(None, None), Ok(false)));
        assert!(matches!(smtp(Some("smtp://127.0.0.1:2525"), None), Ok(true)));
        assert!(matches!(smtp(Some("smtps://u:p@mail.example.com"), None), Ok(true)));
        assert!(refused(Some("http://mail.example.com"), None).starts_with("email.smtp_url"));
        assert!(refused(Some("smtp://x?tls=bogus"), None).starts_with("email.smtp_url"));
        assert!(!refused(Some("smtp://u:hunter2@x?tls=bogus"), None).contains("hunter2"));
        // A private CA only for a URL that speaks TLS, from a file that holds a certificate.
        assert!(refused(None, Some("/etc/hostname")).starts_with("email.smtp_ca"));
        assert!(refused(Some("smtp://mail.example.com"), Some("/etc/hostname")).contains("speaks TLS"));
        assert!(refused(Some("smtps://mail.example.com"), Some("/nonexistent/ca.pem")).contains("/nonexistent/ca.pem"));
        assert!(refused(Some("smtps://mail.example.com"), Some("/etc/hostname")).contains("no PEM certificate"));
    }
}

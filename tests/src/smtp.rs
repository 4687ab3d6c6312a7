//! A real SMTP server for the tests (tests/smtp/sink.py: aiosmtpd in `$E2E_PYTHON`, installed
//! by .ci/tools) on an ephemeral port, and what it received, parsed as a reader of the mail
//! would see it: subject, text and HTML bodies, and the links in them.
//!
//! The parser is by hand and small (headers with folding, RFC 2047 words, MIME multiparts,
//! quoted-printable and base64): enough for the messages the service sends, not a mail
//! library.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// An SMTP server of the test's own, killed on drop.
pub struct SmtpServer {
    port: u16,
    auth: Option<(String, String)>,
    tls: Option<SmtpTls>,
    dir: tempfile::TempDir,
    process: Option<(Child, Lines<BufReader<ChildStdout>>)>,
}

impl SmtpServer {
    /// Starts a server accepting any message from anyone, on any free port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a server that takes messages only after AUTH PLAIN or LOGIN (without TLS) as
    /// `user` with `password`.
    pub async fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user.to_owned(), password.to_owned()))).await
    }

    /// Starts a server holding `pki`'s server certificate (for `127.0.0.1`), speaking TLS as
    /// `tls` says, and taking messages only after AUTH as `user` with `password` over TLS.
    pub async fn start_tls(pki: &crate::Pki, tls: TlsMode, user: &str, password: &str) -> Self {
        let tls = SmtpTls { cert: pki.server_cert.clone(), key: pki.server_key.clone(), mode: tls };
        Self::start_as(Some((user.to_owned(), password.to_owned())), Some(tls)).await
    }

    async fn start_with(auth: Option<(String, String)>) -> Self {
        Self::start_as(auth, None).await
    }

    async fn start_as(auth: Option<(String, String)>, tls: Option<SmtpTls>) -> Self {
        let mut server = SmtpServer { port: 0, auth, tls, dir: tempfile::tempdir().unwrap(), process: None };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let python = std::env::var("E2E_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp/sink.py");
        let mut command = Command::new(&python);
        command.arg(script).arg("--dir").arg(self.dir.path()).arg("--port").arg(self.port.to_string());
        if let Some((user, password)) = &self.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg(&tls.cert).arg(&tls.key);
            if tls.mode == TlsMode::Smtps {
                command.arg("--smtps");
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {python}: {error} (set E2E_PYTHON; .ci/test does)"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP sink did not listen within 30 s")
            .unwrap();
        let Some(port) = first.and_then(|line| line.trim().parse::<u16>().ok()) else {
            panic!("the SMTP sink exited before listening (is aiosmtpd installed in {python}? .ci/tools installs it)");
        };
        assert!(self.port == 0 || self.port == port, "restarted on {port}, not {}", self.port);
        self.port = port;
        self.process = Some((child, lines));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// lettre's URL for the server: `smtp://` with no `tls` parameter is plaintext SMTP,
    /// `?tls=required` STARTTLS, `smtps://` implicit TLS; the credentials (if any) in the
    /// user part.
    pub fn url(&self) -> String {
        let user = match &self.auth {
            Some((user, password)) => format!("{user}:{password}@"),
            None => String::new(),
        };
        match self.tls.as_ref().map(|tls| tls.mode) {
            None => format!("smtp://{user}127.0.0.1:{}", self.port),
            Some(TlsMode::StartTls) => format!("smtp://{user}127.0.0.1:{}?tls=required", self.port),
            Some(TlsMode::Smtps) => format!("smtps://{user}127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server: connections are refused until `restart`. What it received stays.
    pub async fn stop(&mut self) {
        if let Some((mut child, _)) = self.process.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the server again on the same port and directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Where each received message is written (one JSON file per message).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| {
                let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
                let to = record["rcpt_tos"].as_array().unwrap().iter().map(|to| to.as_str().unwrap().to_owned());
                let mut mail = Mail::parse(record["data"].as_str().unwrap());
                mail.from = record["mail_from"].as_str().unwrap().to_owned();
                mail.to = to.collect();
                mail.auth_user = record["auth_user"].as_str().map(str::to_owned);
                mail.tls = record["tls"].as_bool().unwrap();
                mail
            })
            .collect()
    }

    /// The messages to `recipient` (an envelope recipient, any case), in arrival order.
    pub fn to(&self, recipient: &str) -> Vec<Mail> {
        self.messages().into_iter().filter(|mail| mail.is_to(recipient)).collect()
    }

    /// The first message to `recipient`, once one arrived; fails after `limit`.
    pub async fn wait_for(&self, recipient: &str, limit: Duration) -> Mail {
        self.wait_for_all(recipient, None, 1, limit).await.remove(0)
    }

    /// The first message to `recipient` with subject `subject`; fails after `limit`.
    pub async fn wait_for_subject(&self, recipient: &str, subject: &str, limit: Duration) -> Mail {
        self.wait_for_all(recipient, Some(subject), 1, limit).await.remove(0)
    }

    /// Every message to `recipient` (with `subject`, if given) once there are at least `count`;
    /// fails after `limit`, saying what did arrive.
    pub async fn wait_for_all(
        &self,
        recipient: &str,
        subject: Option<&str>,
        count: usize,
        limit: Duration,
    ) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found: Vec<Mail> = self
                .to(recipient)
                .into_iter()
                .filter(|mail| subject.is_none_or(|subject| mail.subject == subject))
                .collect();
            if found.len() >= count {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let arrived: Vec<String> =
                    self.messages().iter().map(|mail| format!("{:?} {:?}", mail.to, mail.subject)).collect();
                panic!(
                    "{count} message(s) to {recipient} ({subject:?}) not received within {limit:?}; got {}: {arrived:#?}",
                    found.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `.eml` files a service without an SMTP server wrote into `dir`, parsed, in no
/// particular order; their `to` is taken from the `To` header.
pub fn outbox(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
        .map(|path| {
            let mut mail = Mail::parse(&std::fs::read_to_string(&path).unwrap());
            let to = mail.header("To").unwrap_or_default();
            // `Name <a@b.c>` or `a@b.c`
            let address = to.rsplit_once('<').map_or(to, |(_, rest)| rest.trim_end_matches('>'));
            mail.to = vec![address.trim().to_owned()];
            mail
        })
        .collect()
}

/// How a test's SMTP server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext until STARTTLS, which it requires before anything else.
    StartTls,
    /// TLS from the first byte (as on port 465).
    Smtps,
}

struct SmtpTls {
    cert: PathBuf,
    key: PathBuf,
    mode: TlsMode,
}

// === Mail ===

/// A received message, as its reader sees it.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// The envelope sender (MAIL FROM).
    pub from: String,
    /// The envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// Who authenticated for it, if the server asked.
    pub auth_user: Option<String>,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The decoded `Subject`.
    pub subject: String,
    /// The first `text/plain` part, decoded, with `\n` line ends ("" if there is none).
    pub text: String,
    /// The first `text/html` part, decoded.
    pub html: Option<String>,
    /// The top-level headers, unfolded, in order (values as sent: not RFC 2047-decoded).
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl Mail {
    /// Parses an RFC 5322 message (envelope fields left empty).
    pub fn parse(raw: &str) -> Mail {
        let (headers, body) = split_entity(raw);
        let mut parts = Vec::new();
        collect_parts(&headers, body, &mut parts);
        let part =
            |kind: &str| parts.iter().find(|(content_type, _)| content_type == kind).map(|(_, text)| text.clone());
        Mail {
            subject: header(&headers, "subject").map(decode_words).unwrap_or_default(),
            text: part("text/plain").unwrap_or_default(),
            html: part("text/html"),
            headers,
            raw: raw.to_owned(),
            ..Mail::default()
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn is_to(&self, recipient: &str) -> bool {
        self.to.iter().any(|to| to.eq_ignore_ascii_case(recipient))
    }

    /// The first URL starting with `prefix` in the text body (else in the HTML body, `&amp;`
    /// undone); fails showing the message if there is none.
    pub fn link(&self, prefix: &str) -> String {
        self.try_link(prefix).unwrap_or_else(|| panic!("no link starting with {prefix} in:\n{}", self.raw))
    }

    pub fn try_link(&self, prefix: &str) -> Option<String> {
        find_link(&self.text, prefix)
            .or_else(|| self.html.as_deref().and_then(|html| find_link(&html.replace("&amp;", "&"), prefix)))
    }
}

/// The value of query parameter `name` of `url`, percent-decoded.
pub fn query_param(url: &str, name: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap_or_else(|error| panic!("{url}: {error}"));
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn find_link(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    let rest = &text[start..];
    let end = rest.find(|c: char| c.is_whitespace() || "<>\"'".contains(c)).unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')']).to_owned())
}

/// Headers (unfolded) and the body of a message or MIME part.
fn split_entity(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (&raw[..lf], &raw[lf + 2..]),
        (Some(crlf), _) => (&raw[..crlf], &raw[crlf + 4..]),
        (None, Some(lf)) => (&raw[..lf], &raw[lf + 2..]),
        (None, None) => (raw, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

/// `text/plain; charset=utf-8; boundary="x"` -> ("text/plain", [("charset", "utf-8"), ...]).
fn content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = value.split(';');
    let kind = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
    let parameters = pieces
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().trim_matches('"').to_owned()))
        })
        .collect();
    (kind, parameters)
}

/// Every leaf part of an entity as (content type, decoded text), depth first.
fn collect_parts(headers: &[(String, String)], body: &str, parts: &mut Vec<(String, String)>) {
    let (kind, parameters) = content_type(header(headers, "content-type").unwrap_or("text/plain"));
    if kind.starts_with("multipart/") {
        let boundary = parameters.iter().find(|(name, _)| name == "boundary").map(|(_, value)| value.as_str());
        let delimiter = format!("--{}", boundary.unwrap_or_else(|| panic!("a multipart without a boundary")));
        let mut current: Option<Vec<&str>> = None;
        for line in body.split('\n') {
            let bare = line.trim_end_matches('\r');
            if bare.starts_with(&delimiter) {
                if let Some(lines) = current.take() {
                    let part = lines.join("\n");
                    let (headers, body) = split_entity(&part);
                    collect_parts(&headers, body, parts);
                }
                if bare.trim_end() == format!("{delimiter}--") {
                    break;
                }
                current = Some(Vec::new());
            } else if let Some(lines) = current.as_mut() {
                lines.push(bare);
            }
        }
        return;
    }
    let encoding = header(headers, "content-transfer-encoding").unwrap_or("7bit").trim().to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(compact).unwrap()
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
    parts.push((kind, text));
}

/// RFC 2045 §6.7: `=XX` is a byte, `=` at a line's end a soft break; trailing blanks dropped.
fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let lines: Vec<&str> = body.split('\n').collect();
    for (index, line) in lines.iter().enumerate() {
        let line = line.trim_end_matches('\r').trim_end_matches([' ', '\t']);
        let (line, soft) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let escaped =
                (bytes[i] == b'=').then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?)).flatten();
            match escaped {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        if !soft && index + 1 < lines.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// RFC 2047 encoded words (`=?utf-8?B?...?=`, `=?utf-8?Q?...?=`) decoded; the blanks between
/// two adjacent words dropped.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        // =?charset?E?text?=
        let Some((_charset, tail)) = rest[start + 2..].split_once('?') else { break };
        let Some((encoding, tail)) = tail.split_once('?') else { break };
        let Some(end) = tail.find("?=") else { break };
        let text = &tail[..end];
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        let bytes = if encoding.eq_ignore_ascii_case("b") {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
        } else {
            decode_quoted_printable(&text.replace('_', " "))
        };
        out.push_str(&String::from_utf8_lossy(&bytes));
        rest = &tail[end + 2..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Python's email package: an RFC 2047 subject, a quoted-printable text part, a
    /// base64 HTML part.
    const RESET: &str = include_str!("../smtp/fixtures/reset-python.eml");
    const LINK: &str = "http://127.0.0.1:8080/account/reset-password?uid=0197a3c2-5d1e-7b44-9a2f-3e5b8c1d2f00&token=Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_";

    #[test]
    fn a_multipart_message_reads_as_its_reader_sees_it() {
        let mail = Mail::parse(RESET);
        assert_eq!(mail.subject, "Réinitialiser: Reset your password");
        assert_eq!(mail.header("message-id"), Some("<fixture@example.com>"));
        assert_eq!(
            mail.header("Content-Type"),
            Some(r#"multipart/alternative; boundary="===============7104038622050142166==""#)
        );
        // Quoted-printable: soft breaks joined, =3D and UTF-8 bytes decoded, hard breaks kept.
        assert!(mail.text.starts_with("Hello Zoë,\n\nSomeone asked"), "{}", mail.text);
        assert!(mail.text.contains("choose a new one, follow\n\n"), "{}", mail.text);
        assert!(mail.text.contains(&format!("\n{LINK}\n")), "{}", mail.text);
        // Base64 HTML.
        let html = mail.html.as_deref().unwrap();
        assert!(html.starts_with("<p>Hello Zoë,</p>"), "{html}");
        assert_eq!(mail.link("http://127.0.0.1:8080/account/reset-password"), LINK);
        assert_eq!(query_param(&mail.link("http://127.0.0.1:8080/"), "token"), "Ab-_".repeat(20));
        assert_eq!(mail.try_link("https://"), None);
    }

    /// A reset mail as the service writes it (lettre 0.11: multipart/alternative, both parts
    /// quoted-printable), captured from its file outbox.
    #[test]
    fn the_services_own_reset_mail_reads_as_its_reader_sees_it() {
        let mail = Mail::parse(include_str!("../smtp/fixtures/reset-lettre.eml"));
        let link = "https://id.example.com/account/reset-password?uid=01a24322-b5b1-7711-b621-71de6408b27f\
                    &token=mJhH8_J-MVYqhEVgPNSxD47htpW-DVeYsV6E0K88FyI";
        assert_eq!(mail.subject, "Reset your password");
        assert_eq!(mail.header("to"), Some("zoe@example.com"));
        assert!(mail.text.starts_with("Hello zoë,\n\nsomeone (we hope you) asked"), "{}", mail.text);
        assert!(mail.text.contains("Choose a new one here:\n\n"), "{}", mail.text);
        assert_eq!(mail.link("https://id.example.com/account/reset-password?"), link);
        assert_eq!(query_param(link, "uid"), "01a24322-b5b1-7711-b621-71de6408b27f");
        let html = mail.html.as_deref().unwrap();
        assert!(html.contains(&link.replace('&', "&amp;")), "{html}");
    }

    #[test]
    fn links_come_from_the_html_when_the_text_has_none_and_stop_at_punctuation() {
        let raw = "Subject: =?UTF-8?B?VmVyaWZ5?= =?UTF-8?Q?_your_email_address?=\r\nContent-Type: text/html\r\n\r\n\
                   <a href=\"http://x.test/a?key=1&amp;b=2\">go</a>";
        let mail = Mail::parse(raw);
        assert_eq!(mail.subject, "Verify your email address");
        assert_eq!(mail.text, "");
        assert_eq!(mail.link("http://x.test/a"), "http://x.test/a?key=1&b=2");

        let mail = Mail::parse("Subject: Plain\n\nGo to http://x.test/v?key=abc. Then (http://x.test/w?k=1), done.\n");
        assert_eq!(mail.subject, "Plain");
        assert_eq!(mail.link("http://x.test/v"), "http://x.test/v?key=abc");
        assert_eq!(mail.link("http://x.test/w"), "http://x.test/w?k=1");
    }

    #[test]
    fn quoted_printable_decodes_soft_breaks_escapes_and_leaves_lone_equals() {
        assert_eq!(decode_quoted_printable("a=3Db=\r\nc\r\nd=C3=A9 =\r\n"), "a=bc\r\ndé ".as_bytes());
        assert_eq!(decode_quoted_printable("x=ZZ="), b"x=ZZ");
    }

    /// Sends one message with Python's smtplib (a client that is not ours).
    async fn send(server: &SmtpServer, to: &str, subject: &str, login: Option<(&str, &str)>) -> Result<(), String> {
        let python = std::env::var("E2E_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = r#"
import smtplib, sys
from email.message import EmailMessage
port, to, subject, user, password = sys.argv[1:]
message = EmailMessage()
message["From"], message["To"], message["Subject"] = "a@example.com", to, subject
message.set_content("see http://x.test/l?key=1")
with smtplib.SMTP("127.0.0.1", int(port), timeout=10) as client:
    if user:
        client.login(user, password)
    client.send_message(message)
"#;
        let (user, password) = login.unwrap_or_default();
        let output = Command::new(python)
            .args(["-c", script, &server.port().to_string(), to, subject, user, password])
            .output()
            .await
            .unwrap();
        if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
    }

    #[tokio::test]
    async fn the_sink_keeps_each_message_and_restarts_on_its_port() {
        let mut server = SmtpServer::start().await;
        let port = server.port();
        assert_eq!(server.url(), format!("smtp://127.0.0.1:{port}"));
        send(&server, "ann@example.com", "one", None).await.unwrap();
        let mail = server.wait_for("ANN@example.com", Duration::from_secs(5)).await;
        assert_eq!((mail.from.as_str(), mail.subject.as_str()), ("a@example.com", "one"));
        assert_eq!(mail.link("http://x.test/"), "http://x.test/l?key=1");

        server.stop().await;
        assert!(send(&server, "ann@example.com", "lost", None).await.is_err(), "a stopped server took a message");
        server.restart().await;
        assert_eq!(server.port(), port);
        send(&server, "ann@example.com", "two", None).await.unwrap();
        let subjects: Vec<String> = server
            .wait_for_all("ann@example.com", None, 2, Duration::from_secs(5))
            .await
            .into_iter()
            .map(|mail| mail.subject)
            .collect();
        assert_eq!(subjects, ["one", "two"]);
    }

    #[tokio::test]
    async fn with_auth_the_sink_takes_messages_only_after_the_right_login() {
        let server = SmtpServer::start_with_auth("mailer", "s3cret").await;
        assert_eq!(server.url(), format!("smtp://mailer:s3cret@127.0.0.1:{}", server.port()));
        assert!(send(&server, "bob@example.com", "anonymous", None).await.is_err());
        assert!(send(&server, "bob@example.com", "wrong", Some(("mailer", "nope"))).await.is_err());
        send(&server, "bob@example.com", "right", Some(("mailer", "s3cret"))).await.unwrap();
        let mail = server.wait_for("bob@example.com", Duration::from_secs(5)).await;
        assert_eq!((mail.subject.as_str(), mail.auth_user.as_deref()), ("right", Some("mailer")));
        assert_eq!(server.messages().len(), 1);
    }
}

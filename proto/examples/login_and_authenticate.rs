//! Log in and ask who holds the token, from Rust with the `identity-proto` crate; then call on
//! the user's behalf. `docs/clients.md` shows this file, and the tests run it.
//!
//!   IDENTITY_URL=http://127.0.0.1:50051 IDENTITY_USERNAME=alice IDENTITY_PASSWORD='…' \
//!     cargo run -p identity-proto --example login_and_authenticate

use identity_proto::pb::{
    AuthenticateRequest, ListSessionsRequest, LoginRequest, auth_service_client::AuthServiceClient,
    authenticate_request::Credential,
};
use tonic::{Request, metadata::MetadataValue};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("IDENTITY_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let mut auth = AuthServiceClient::connect(url).await?;

    // Log in: a session, an access token (JWT) and a refresh token.
    let login = auth
        .login(LoginRequest {
            username: std::env::var("IDENTITY_USERNAME")?,
            password: std::env::var("IDENTITY_PASSWORD")?,
        })
        .await?
        .into_inner();

    // Who holds this token? The call a gateway makes on every request: a revoked session is
    // refused here at once, however long the token would still live.
    let principal = auth
        .authenticate(AuthenticateRequest {
            credential: Some(Credential::AccessToken(login.access_token.clone())),
            omit_claims: true,
        })
        .await?
        .into_inner()
        .principal
        .ok_or("no principal")?;
    let user = principal.user.ok_or("no user")?;
    println!("{} is a {}", user.username, principal.role);

    // On the user's behalf: their credential travels as metadata.
    let mut request = Request::new(ListSessionsRequest::default());
    let bearer = MetadataValue::try_from(format!("Bearer {}", login.access_token))?;
    request.metadata_mut().insert("authorization", bearer);
    let sessions = auth.list_sessions(request).await?.into_inner().sessions;
    println!("{} live session(s)", sessions.len());
    Ok(())
}

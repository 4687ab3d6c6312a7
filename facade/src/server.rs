//! The HTTP server under the poem app: accepting, HTTP/1.1 and HTTP/2 (hyper), websocket
//! upgrades, graceful shutdown.
//!
//! Written here rather than with `poem::Server`, which does the same but does not expose
//! hyper's settings: a request header line that is not valid HTTP (control bytes in a cookie,
//! say) would get hyper's own `400` with an empty body before the app sees anything. Told to,
//! hyper drops such a line instead (as nginx does with bad header names), and the request is
//! answered by the app like any other, in JSON. (A NUL byte in a header still ends the
//! connection with hyper's bare `400`: hyper refuses to skip past one.)

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper::body::{Bytes, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use poem::{
    Addr, Endpoint, EndpointExt, IntoEndpoint, Request, Response,
    endpoint::BoxEndpoint,
    http::{self, uri::Scheme},
    web::{LocalAddr, RemoteAddr},
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What poem hands hyper as a response body.
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets open
/// requests finish for up to `grace`, and drops the connections left.
pub async fn run<E>(
    listener: TcpListener,
    app: E,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let app: Arc<BoxEndpoint<'static, Response>> = Arc::new(app.into_endpoint().map_to_response().boxed());
    let local = listener.local_addr()?;
    let connections = TaskTracker::new();
    let (stopping, stopped) = (CancellationToken::new(), CancellationToken::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let ends = Ends { stopping: stopping.clone(), stopped: stopped.clone() };
                    connections.spawn(serve_connection(stream, local, remote, Arc::clone(&app), ends));
                }
                // Out of file descriptors and the like: wait rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::info!("closing the connections still open after the shutdown grace");
        stopped.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// How a connection is told to end: gracefully (`stopping`: open requests finish, idle
/// keep-alive connections close), then at once (`stopped`).
struct Ends {
    stopping: CancellationToken,
    stopped: CancellationToken,
}

async fn serve_connection(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    app: Arc<BoxEndpoint<'static, Response>>,
    ends: Ends,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let app = Arc::clone(&app);
        async move {
            let request: Request =
                (request, LocalAddr(Addr::SocketAddr(local)), RemoteAddr(Addr::SocketAddr(remote)), Scheme::HTTP)
                    .into();
            Ok::<http::Response<ResponseBody>, Infallible>(app.get_response(request).await.into())
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().ignore_invalid_headers(true);
    // poem's settings: a peer may not reset streams faster than they are accepted, nor send
    // more than 16 KiB of headers.
    builder.http2().max_pending_accept_reset_streams(Some(20)).max_header_list_size(16 * 1024);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = ends.stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = ends.stopped.cancelled() => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %remote, "connection ended");
    }
}

//! A client of the controller API over its Unix socket (used by p4lbctl and tests).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use p4lb_proto::api::controller_client::ControllerClient;

/// Connects to the API socket at `path`.
pub async fn connect(path: &Path) -> Result<ControllerClient<Channel>, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await?;
    Ok(ControllerClient::new(channel))
}

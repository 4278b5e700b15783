//! A minimal CRI (runtime.v1) client over a container runtime's Unix socket
//! (containerd's), with a blocking API: the agent's [`crate::runtime::CriRuntime`] runs
//! it on tokio's blocking pool, the testbed's scenarios (p4lb-e2e) from plain threads.
//! The socket is dialled with `p4lb_api::connect_unix_bounded`; replies are bounded by
//! tonic's default decoding limit (4 MiB).
//!
//! Why the messages come from a subset of the CRI API written for p4lb
//! (`proto/cri.proto`, compiled by `build.rs` with protox) and not from the
//! `k8s-cri` crate: `k8s-cri` 0.11 is on the same tonic/prost line (0.14), but
//! its build script runs prost-build, which needs a system `protoc`; p4lb
//! builds without one (p4lb-proto compiles its protos with protox too). The
//! generated types sit in [`pb`] under the same names `k8s_cri::v1` uses, so
//! moving to the crate is replacing that module with `pub use k8s_cri::v1 as
//! pb;`.

use std::path::Path;
use std::time::Duration;

use tonic::transport::Channel;

/// Generated CRI v1 messages and clients (see `proto/cri.proto`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;

/// How long a CRI call may take (a checkpoint or a restore of a large container takes
/// seconds; CheckpointContainer carries its own timeout too).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long connecting to the socket may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("CRI {call}: {code:?}: {message}")]
    Call {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("CRI socket {socket}: {message}")]
    Connect { socket: String, message: String },
    #[error("CRI client: {0}")]
    Local(String),
}

impl CriError {
    /// NOT_FOUND from the runtime.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CriError::Call {
                code: tonic::Code::NotFound,
                ..
            }
        )
    }
}

fn cri_err(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |s| CriError::Call {
        call,
        code: s.code(),
        message: s.message().to_string(),
    }
}

fn missing(call: &'static str) -> CriError {
    CriError::Call {
        call,
        code: tonic::Code::Internal,
        message: "reply without status".into(),
    }
}

/// A connected CRI client.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

type Result<T> = std::result::Result<T, CriError>;

impl Cri {
    /// Connects to the CRI socket at `socket`.
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CriError::Local(format!("creating a tokio runtime: {e}")))?;
        let channel = rt.block_on(p4lb_api::connect_unix_bounded(
            socket,
            CONNECT_TIMEOUT,
            CALL_TIMEOUT,
        ));
        let channel = channel.map_err(|e| CriError::Connect {
            socket: socket.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// Runtime name, version and CRI API version.
    pub fn version(&mut self) -> Result<pb::VersionResponse> {
        let req = pb::VersionRequest {
            version: "v1".into(),
        };
        self.rt
            .block_on(self.runtime.version(req))
            .map(|r| r.into_inner())
            .map_err(cri_err("Version"))
    }

    /// Runtime conditions (RuntimeReady, NetworkReady).
    pub fn status(&mut self) -> Result<pb::StatusResponse> {
        self.rt
            .block_on(self.runtime.status(pb::StatusRequest { verbose: false }))
            .map(|r| r.into_inner())
            .map_err(cri_err("Status"))
    }

    /// Starts a pod sandbox; returns its id.
    pub fn run_pod_sandbox(&mut self, config: pb::PodSandboxConfig) -> Result<String> {
        let req = pb::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        self.rt
            .block_on(self.runtime.run_pod_sandbox(req))
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(cri_err("RunPodSandbox"))
    }

    /// Status of a pod sandbox (state, IP).
    pub fn pod_sandbox_status(&mut self, id: &str) -> Result<pb::PodSandboxStatus> {
        let req = pb::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        self.rt
            .block_on(self.runtime.pod_sandbox_status(req))
            .map_err(cri_err("PodSandboxStatus"))?
            .into_inner()
            .status
            .ok_or_else(|| missing("PodSandboxStatus"))
    }

    /// The pod sandboxes the runtime knows (every state).
    pub fn list_pod_sandboxes(&mut self) -> Result<Vec<pb::PodSandbox>> {
        self.rt
            .block_on(
                self.runtime
                    .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None }),
            )
            .map(|r| r.into_inner().items)
            .map_err(cri_err("ListPodSandbox"))
    }

    /// The containers of pod sandbox `pod_sandbox_id` (every state).
    pub fn list_containers(&mut self, pod_sandbox_id: &str) -> Result<Vec<pb::Container>> {
        let req = pb::ListContainersRequest {
            filter: Some(pb::ContainerFilter {
                pod_sandbox_id: pod_sandbox_id.into(),
                ..Default::default()
            }),
        };
        self.rt
            .block_on(self.runtime.list_containers(req))
            .map(|r| r.into_inner().containers)
            .map_err(cri_err("ListContainers"))
    }

    /// Stops a pod sandbox (its containers and network).
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let req = pb::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(req))
            .map(|_| ())
            .map_err(cri_err("StopPodSandbox"))
    }

    /// Removes a stopped pod sandbox.
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let req = pb::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(req))
            .map(|_| ())
            .map_err(cri_err("RemovePodSandbox"))
    }

    /// Creates a container in a pod sandbox; returns its id.
    pub fn create_container(
        &mut self,
        pod_sandbox_id: &str,
        config: pb::ContainerConfig,
        sandbox_config: pb::PodSandboxConfig,
    ) -> Result<String> {
        let req = pb::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        self.rt
            .block_on(self.runtime.create_container(req))
            .map(|r| r.into_inner().container_id)
            .map_err(cri_err("CreateContainer"))
    }

    /// Starts a created container.
    pub fn start_container(&mut self, id: &str) -> Result<()> {
        let req = pb::StartContainerRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.start_container(req))
            .map(|_| ())
            .map_err(cri_err("StartContainer"))
    }

    /// Stops a container (SIGTERM, then SIGKILL after `timeout` seconds).
    pub fn stop_container(&mut self, id: &str, timeout: i64) -> Result<()> {
        let req = pb::StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.rt
            .block_on(self.runtime.stop_container(req))
            .map(|_| ())
            .map_err(cri_err("StopContainer"))
    }

    /// Removes a container.
    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        let req = pb::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.remove_container(req))
            .map(|_| ())
            .map_err(cri_err("RemoveContainer"))
    }

    /// Status of a container.
    pub fn container_status(&mut self, id: &str) -> Result<pb::ContainerStatus> {
        let req = pb::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.rt
            .block_on(self.runtime.container_status(req))
            .map_err(cri_err("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or_else(|| missing("ContainerStatus"))
    }

    /// Checkpoints a container into the archive `location` (a path as the runtime
    /// sees it); `timeout` in seconds.
    pub fn checkpoint_container(&mut self, id: &str, location: &str, timeout: i64) -> Result<()> {
        let req = pb::CheckpointContainerRequest {
            container_id: id.into(),
            location: location.into(),
            timeout,
        };
        self.rt
            .block_on(self.runtime.checkpoint_container(req))
            .map(|_| ())
            .map_err(cri_err("CheckpointContainer"))
    }

    /// Pulls `image` (from a registry); returns the image reference.
    pub fn pull_image(&mut self, image: &str) -> Result<String> {
        let req = pb::PullImageRequest {
            image: Some(pb::ImageSpec {
                image: image.into(),
                annotations: Default::default(),
            }),
            sandbox_config: None,
        };
        self.rt
            .block_on(self.images.pull_image(req))
            .map(|r| r.into_inner().image_ref)
            .map_err(cri_err("PullImage"))
    }

    /// Images known to the runtime.
    pub fn list_images(&mut self) -> Result<Vec<pb::Image>> {
        self.rt
            .block_on(
                self.images
                    .list_images(pb::ListImagesRequest { filter: None }),
            )
            .map(|r| r.into_inner().images)
            .map_err(cri_err("ListImages"))
    }
}

/// What kubelet sets for a container unless the pod shares its process
/// namespace: its own PID namespace, the pod's network and IPC. (A container
/// without it would join the sandbox's PID namespace, where a restore can find
/// the PID it must recreate already taken.)
pub fn container_linux() -> Option<pb::LinuxContainerConfig> {
    Some(pb::LinuxContainerConfig {
        security_context: Some(pb::LinuxContainerSecurityContext {
            namespace_options: Some(namespace_options()),
        }),
    })
}

/// Pod network and IPC, a PID namespace per container.
pub fn namespace_options() -> pb::NamespaceOption {
    pb::NamespaceOption {
        network: pb::NamespaceMode::Pod as i32,
        pid: pb::NamespaceMode::Container as i32,
        ipc: pb::NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}

/// A pod sandbox config as kubelet writes one for pod `name` (uid `uid`) in
/// `namespace`: its hostname, its log directory, the pod network (CNI), no host
/// namespaces.
pub fn pod_config_in(namespace: &str, name: &str, uid: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
            }),
            sysctls: Default::default(),
        }),
        ..Default::default()
    }
}

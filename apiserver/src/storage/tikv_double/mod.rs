//! A loopback, wire-level double of a PD + TiKV cluster, for tests of the TiKV store (no TiKV
//! or PD server can be installed on the machines Drover is built on).
//!
//! It serves gRPC from TiKV's and PD's own protos (`proto/kvproto`, as the `tikv-client` crate
//! ships them) on two loopback ports, and implements only the RPCs that `tikv-client`'s
//! transactional API calls; every other RPC answers UNIMPLEMENTED:
//! - PD: `GetMembers` (one member, the leader), `Tso` (a monotonic hybrid clock: physical
//!   milliseconds << 18 | logical), `GetRegion`/`GetRegionByID` (one region covering every key,
//!   its leader on the one store), `GetStore`/`GetAllStores`, `UpdateGCSafePoint` (which also
//!   runs the MVCC garbage collection, as TiKV's GC worker does on PD's safe point);
//! - TiKV: `KvGet`, `KvBatchGet`, `KvScan`, `KvPrewrite`, `KvCommit`, `KvBatchRollback`,
//!   `KvCleanup`, `KvCheckTxnStatus`, `KvResolveLock`, `KvTxnHeartBeat`, `KvScanLock`, over
//!   Percolator MVCC ([`mvcc`]).
//!
//! What it is not: one replica, one region, memory only, no Raft, no region splits or leader
//! changes, no async commit or 1PC, no pessimistic transactions. [`TikvDouble::pause`] stops both
//! servers (connections refused) and [`TikvDouble::resume`] starts them again on the same ports
//! with the same data, to test a store that goes away and comes back.

mod mvcc;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tonic::{Request, Response, Status, Streaming};

use mvcc::{LOGICAL_BITS, Mvcc};

/// The generated PD and TiKV types and server stubs.
#[allow(missing_docs, dead_code, clippy::all, clippy::pedantic)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/kvproto.rs"));
}

use pb::{kvrpcpb, metapb, pdpb, tikvpb};

const CLUSTER_ID: u64 = 0x0d20_7e20_0000_0001;
const STORE_ID: u64 = 1;
const REGION_ID: u64 = 2;
const PEER_ID: u64 = 3;

/// A running PD + TiKV double on loopback.
pub struct TikvDouble {
    shared: Arc<Shared>,
    pd_addr: SocketAddr,
    kv_addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

struct Shared {
    mvcc: Mvcc,
    /// The last timestamp PD handed out.
    last_ts: std::sync::Mutex<u64>,
    safe_point: AtomicU64,
    kv_addr: std::sync::OnceLock<SocketAddr>,
    pd_addr: std::sync::OnceLock<SocketAddr>,
}

impl std::fmt::Debug for TikvDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvDouble")
            .field("pd", &self.pd_addr)
            .field("tikv", &self.kv_addr)
            .finish()
    }
}

impl TikvDouble {
    /// Starts PD and TiKV on two free loopback ports.
    pub async fn start() -> std::io::Result<TikvDouble> {
        let pd = TcpListener::bind("127.0.0.1:0").await?;
        let kv = TcpListener::bind("127.0.0.1:0").await?;
        let (pd_addr, kv_addr) = (pd.local_addr()?, kv.local_addr()?);
        let shared = Arc::new(Shared {
            mvcc: Mvcc::default(),
            last_ts: std::sync::Mutex::new(0),
            safe_point: AtomicU64::new(0),
            kv_addr: std::sync::OnceLock::from(kv_addr),
            pd_addr: std::sync::OnceLock::from(pd_addr),
        });
        let double = TikvDouble {
            shared,
            pd_addr,
            kv_addr,
            running: Mutex::new(None),
        };
        *double.running.lock().await = Some(double.serve(pd, kv));
        Ok(double)
    }

    /// PD's `host:port`, as `--store tikv://` takes it.
    pub fn pd_endpoint(&self) -> String {
        self.pd_addr.to_string()
    }

    /// TiKV's `host:port`.
    pub fn tikv_endpoint(&self) -> String {
        self.kv_addr.to_string()
    }

    /// Number of MVCC versions held (writes and locks), to observe garbage collection.
    pub fn versions(&self) -> usize {
        self.shared.mvcc.versions()
    }

    /// The GC safe point PD holds.
    pub fn safe_point(&self) -> u64 {
        self.shared.safe_point.load(Ordering::Acquire)
    }

    /// Stops serving: both ports refuse connections and open connections end. The data stays.
    pub async fn pause(&self) {
        if let Some(running) = self.running.lock().await.take() {
            let _ = running.stop.send(());
            let _ = running.done.await;
        }
    }

    /// Serves again on the same ports, with the data held when paused.
    pub async fn resume(&self) -> std::io::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_none() {
            let pd = TcpListener::bind(self.pd_addr).await?;
            let kv = TcpListener::bind(self.kv_addr).await?;
            *running = Some(self.serve(pd, kv));
        }
        Ok(())
    }

    fn serve(&self, pd: TcpListener, kv: TcpListener) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        let done = tokio::spawn(async move {
            let (kill, killed) = tokio::sync::watch::channel(false);
            let pd_server = tonic::transport::Server::builder()
                .add_service(pdpb::pd_server::PdServer::new(PdService {
                    shared: shared.clone(),
                }))
                .serve_with_incoming_shutdown(killable(pd, &killed), wait_true(killed.clone()));
            let kv_server = tonic::transport::Server::builder()
                .add_service(
                    tikvpb::tikv_server::TikvServer::new(KvService { shared })
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX),
                )
                .serve_with_incoming_shutdown(killable(kv, &killed), wait_true(killed.clone()));
            let pd_task = tokio::spawn(pd_server);
            let kv_task = tokio::spawn(kv_server);
            let _ = stopped.await;
            // Every open connection fails its next read or write at once, as when the
            // process dies; the servers stop accepting.
            let _ = kill.send(true);
            for task in [pd_task, kv_task] {
                let _ = task.await;
            }
        });
        Running { stop, done }
    }
}

async fn wait_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The connections `listener` accepts, each failing once `killed` turns true.
fn killable(
    listener: TcpListener,
    killed: &tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = std::io::Result<Killable>> + use<> {
    let killed = killed.clone();
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(Killable {
            inner: conn,
            dead: Box::pin(wait_true(killed.clone())),
            is_dead: false,
        })
    })
}

/// A TCP connection that fails with `ConnectionReset` once its server is paused.
struct Killable {
    inner: tokio::net::TcpStream,
    dead: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    is_dead: bool,
}

impl Killable {
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        if !self.is_dead && self.dead.as_mut().poll(cx).is_ready() {
            self.is_dead = true;
        }
        if self.is_dead {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the TiKV double is paused",
            ));
        }
        Ok(())
    }
}

impl tonic::transport::server::Connected for Killable {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for TikvDouble {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.try_lock()
            && let Some(running) = running.take()
        {
            let _ = running.stop.send(());
            running.done.abort();
        }
    }
}

impl Shared {
    /// Allocates `count` timestamps and returns the last one.
    fn allocate(&self, count: u64) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut last = self.last_ts.lock().unwrap_or_else(|e| e.into_inner());
        let floor = (now_ms << LOGICAL_BITS).max(*last + 1);
        let mut next = floor + count - 1;
        // The logical part must not spill into the physical one within an allocation.
        if (floor >> LOGICAL_BITS) != (next >> LOGICAL_BITS) {
            next = (((floor >> LOGICAL_BITS) + 1) << LOGICAL_BITS) + count - 1;
        }
        *last = next;
        next
    }

    fn kv_url(&self) -> String {
        self.kv_addr
            .get()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    fn pd_url(&self) -> String {
        self.pd_addr
            .get()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default()
    }
}

fn header() -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader {
        cluster_id: CLUSTER_ID,
        error: None,
    })
}

fn region() -> metapb::Region {
    metapb::Region {
        id: REGION_ID,
        start_key: Vec::new(),
        end_key: Vec::new(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![leader()],
        ..Default::default()
    }
}

fn leader() -> metapb::Peer {
    metapb::Peer {
        id: PEER_ID,
        store_id: STORE_ID,
        ..Default::default()
    }
}

struct PdService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl pdpb::pd_server::Pd for PdService {
    async fn get_members(
        &self,
        _: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        let member = pdpb::Member {
            name: "pd-double".into(),
            member_id: 1,
            peer_urls: vec![self.shared.pd_url()],
            client_urls: vec![self.shared.pd_url()],
            ..Default::default()
        };
        Ok(Response::new(pdpb::GetMembersResponse {
            header: header(),
            members: vec![member.clone()],
            leader: Some(member.clone()),
            etcd_leader: Some(member),
            ..Default::default()
        }))
    }

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pdpb::TsoResponse>>, Status> {
        let shared = self.shared.clone();
        let requests = request.into_inner();
        let responses = requests.map(move |req| {
            let req = req?;
            if req.count == 0 {
                return Err(Status::invalid_argument("tso: count must be at least 1"));
            }
            let last = shared.allocate(u64::from(req.count));
            Ok(pdpb::TsoResponse {
                header: header(),
                count: req.count,
                timestamp: Some(pdpb::Timestamp {
                    physical: (last >> LOGICAL_BITS) as i64,
                    logical: (last & ((1 << LOGICAL_BITS) - 1)) as i64,
                    suffix_bits: 0,
                }),
            })
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn get_region(
        &self,
        _: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        Ok(Response::new(pdpb::GetRegionResponse {
            header: header(),
            region: Some(region()),
            leader: Some(leader()),
            ..Default::default()
        }))
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let found = request.get_ref().region_id == REGION_ID;
        Ok(Response::new(pdpb::GetRegionResponse {
            header: header(),
            region: found.then(region),
            leader: found.then(leader),
            ..Default::default()
        }))
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        if request.get_ref().store_id != STORE_ID {
            return Err(Status::not_found(format!(
                "no store {}",
                request.get_ref().store_id
            )));
        }
        Ok(Response::new(pdpb::GetStoreResponse {
            header: header(),
            store: Some(self.store()),
            ..Default::default()
        }))
    }

    async fn get_all_stores(
        &self,
        _: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        Ok(Response::new(pdpb::GetAllStoresResponse {
            header: header(),
            stores: vec![self.store()],
        }))
    }

    async fn update_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let wanted = request.get_ref().safe_point;
        let previous = self.shared.safe_point.fetch_max(wanted, Ordering::AcqRel);
        let now = previous.max(wanted);
        if wanted > previous {
            self.shared.mvcc.gc(now);
        }
        Ok(Response::new(pdpb::UpdateGcSafePointResponse {
            header: header(),
            new_safe_point: now,
        }))
    }
}

impl PdService {
    fn store(&self) -> metapb::Store {
        metapb::Store {
            id: STORE_ID,
            address: self.shared.kv_url(),
            version: "8.5.0".into(),
            ..Default::default()
        }
    }
}

struct KvService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl tikvpb::tikv_server::Tikv for KvService {
    async fn kv_get(
        &self,
        request: Request<kvrpcpb::GetRequest>,
    ) -> Result<Response<kvrpcpb::GetResponse>, Status> {
        let req = request.into_inner();
        let mut resp = kvrpcpb::GetResponse::default();
        match self.shared.mvcc.get(&req.key, req.version) {
            Ok(Some(value)) => resp.value = value,
            Ok(None) => resp.not_found = true,
            Err(error) => resp.error = Some(error),
        }
        Ok(Response::new(resp))
    }

    async fn kv_batch_get(
        &self,
        request: Request<kvrpcpb::BatchGetRequest>,
    ) -> Result<Response<kvrpcpb::BatchGetResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::BatchGetResponse {
            pairs: self.shared.mvcc.batch_get(&req.keys, req.version),
            ..Default::default()
        }))
    }

    async fn kv_scan(
        &self,
        request: Request<kvrpcpb::ScanRequest>,
    ) -> Result<Response<kvrpcpb::ScanResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::ScanResponse {
            pairs: self.shared.mvcc.scan(
                &req.start_key,
                &req.end_key,
                req.limit as usize,
                req.version,
                req.key_only,
                req.reverse,
            ),
            ..Default::default()
        }))
    }

    async fn kv_prewrite(
        &self,
        request: Request<kvrpcpb::PrewriteRequest>,
    ) -> Result<Response<kvrpcpb::PrewriteResponse>, Status> {
        let req = request.into_inner();
        if req.use_async_commit || req.try_one_pc || req.for_update_ts != 0 {
            return Err(Status::unimplemented(
                "the TiKV double serves optimistic two-phase commit only (no async commit, 1PC \
                 or pessimistic transactions)",
            ));
        }
        let errors = self.shared.mvcc.prewrite(
            &req.mutations,
            &req.primary_lock,
            req.start_version,
            req.lock_ttl,
            req.txn_size,
        );
        Ok(Response::new(kvrpcpb::PrewriteResponse {
            errors,
            ..Default::default()
        }))
    }

    async fn kv_commit(
        &self,
        request: Request<kvrpcpb::CommitRequest>,
    ) -> Result<Response<kvrpcpb::CommitResponse>, Status> {
        let req = request.into_inner();
        let error = self
            .shared
            .mvcc
            .commit(&req.keys, req.start_version, req.commit_version);
        Ok(Response::new(kvrpcpb::CommitResponse {
            commit_version: if error.is_none() {
                req.commit_version
            } else {
                0
            },
            error,
            ..Default::default()
        }))
    }

    async fn kv_batch_rollback(
        &self,
        request: Request<kvrpcpb::BatchRollbackRequest>,
    ) -> Result<Response<kvrpcpb::BatchRollbackResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::BatchRollbackResponse {
            error: self.shared.mvcc.rollback(&req.keys, req.start_version),
            ..Default::default()
        }))
    }

    async fn kv_cleanup(
        &self,
        request: Request<kvrpcpb::CleanupRequest>,
    ) -> Result<Response<kvrpcpb::CleanupResponse>, Status> {
        let req = request.into_inner();
        let mut resp = kvrpcpb::CleanupResponse::default();
        match self
            .shared
            .mvcc
            .check_txn_status(&req.key, req.start_version, req.current_ts, true)
        {
            Ok(status) if status.lock_info.is_some() => {
                resp.error = Some(kvrpcpb::KeyError {
                    locked: status.lock_info,
                    ..Default::default()
                });
            }
            Ok(status) => resp.commit_version = status.commit_version,
            Err(error) => resp.error = Some(error),
        }
        Ok(Response::new(resp))
    }

    async fn kv_check_txn_status(
        &self,
        request: Request<kvrpcpb::CheckTxnStatusRequest>,
    ) -> Result<Response<kvrpcpb::CheckTxnStatusResponse>, Status> {
        let req = request.into_inner();
        let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
        match self.shared.mvcc.check_txn_status(
            &req.primary_key,
            req.lock_ts,
            req.current_ts,
            req.rollback_if_not_exist,
        ) {
            Ok(status) => {
                resp.lock_ttl = status.lock_ttl;
                resp.commit_version = status.commit_version;
                resp.action = status.action as i32;
                resp.lock_info = status.lock_info;
            }
            Err(error) => resp.error = Some(error),
        }
        Ok(Response::new(resp))
    }

    async fn kv_resolve_lock(
        &self,
        request: Request<kvrpcpb::ResolveLockRequest>,
    ) -> Result<Response<kvrpcpb::ResolveLockResponse>, Status> {
        let req = request.into_inner();
        let txns: Vec<(u64, u64)> = if req.txn_infos.is_empty() {
            vec![(req.start_version, req.commit_version)]
        } else {
            req.txn_infos.iter().map(|t| (t.txn, t.status)).collect()
        };
        self.shared.mvcc.resolve(&txns, &req.keys);
        Ok(Response::new(kvrpcpb::ResolveLockResponse::default()))
    }

    async fn kv_txn_heart_beat(
        &self,
        request: Request<kvrpcpb::TxnHeartBeatRequest>,
    ) -> Result<Response<kvrpcpb::TxnHeartBeatResponse>, Status> {
        let req = request.into_inner();
        let mut resp = kvrpcpb::TxnHeartBeatResponse::default();
        match self
            .shared
            .mvcc
            .heart_beat(&req.primary_lock, req.start_version, req.advise_lock_ttl)
        {
            Ok(ttl) => resp.lock_ttl = ttl,
            Err(error) => resp.error = Some(error),
        }
        Ok(Response::new(resp))
    }

    async fn kv_scan_lock(
        &self,
        request: Request<kvrpcpb::ScanLockRequest>,
    ) -> Result<Response<kvrpcpb::ScanLockResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kvrpcpb::ScanLockResponse {
            locks: self.shared.mvcc.scan_locks(
                &req.start_key,
                &req.end_key,
                req.max_version,
                req.limit as usize,
            ),
            ..Default::default()
        }))
    }
}

//! A TCP proxy in front of an emulator that can take the "emulator" down at an exact moment: when
//! armed, the first request containing a trigger string (for DynamoDB, an `X-Amz-Target` such as
//! `TransactWriteItems`) is cut before it reaches the emulator, every open connection is reset and
//! new ones are refused, as if the process had stopped, until `restore`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy.
pub struct OutageProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    armed: Arc<AtomicBool>,
    down: watch::Sender<bool>,
    trigger: Arc<Vec<u8>>,
}

impl OutageProxy {
    /// Proxies to `upstream` (`host:port`), going down when a request contains `trigger`.
    pub async fn start(upstream: String, trigger: &str) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let (down, _) = watch::channel(false);
        let trigger = Arc::new(trigger.as_bytes().to_vec());
        let proxy = OutageProxy {
            address,
            armed: armed.clone(),
            down: down.clone(),
            trigger: trigger.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *down.borrow() {
                    drop(client); // refused, as by a stopped process
                    continue;
                }
                let (upstream, armed, down, trigger) = (
                    upstream.clone(),
                    armed.clone(),
                    down.clone(),
                    trigger.clone(),
                );
                tokio::spawn(async move { pipe(client, upstream, armed, down, trigger).await });
            }
        });
        proxy
    }

    /// Goes down at the next request containing the trigger.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Comes back up.
    pub fn restore(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.down.send_replace(false);
    }

    /// True once the trigger fired (and until `restore`).
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// The trigger string.
    pub fn trigger(&self) -> String {
        String::from_utf8_lossy(&self.trigger).into_owned()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

async fn pipe(
    client: TcpStream,
    upstream: String,
    armed: Arc<AtomicBool>,
    down: watch::Sender<bool>,
    trigger: Arc<Vec<u8>>,
) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut went_down = down.subscribe();
    let upload = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if armed.load(Ordering::SeqCst) && contains(&buf[..n], &trigger) {
                down.send_replace(true);
                return; // the request never reaches the emulator
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let download = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let outage = async {
        let _ = went_down.wait_for(|d| *d).await;
    };
    tokio::select! {
        () = upload => {}
        () = download => {}
        () = outage => {}
    }
}

//! The TCP server: one task per connection reading frames, one task per request (answers may
//! leave out of order, each on its stream id), a writer task per connection, and the fault
//! injection consulted before each statement runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use scylla_cql::frame::protocol_features::ProtocolFeatures;
use scylla_cql::frame::request::batch::{BatchStatement, BatchType};
use scylla_cql::frame::request::execute::ExecuteV2;
use scylla_cql::frame::request::{Batch, DeserializableRequest, Query, Startup};
use scylla_cql::serialize::row::SerializedValues;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::engine::{Bound, Engine, ExecResult, PageRequest, Prepared};
use crate::error::CqlError;
use crate::fault::{ArmedFault, Fault, FaultOutcome, StatementMatcher};
use crate::protocol::{self, RequestFrame};
use crate::stats::ServerStats;
use crate::terms::decode_binds;

pub(crate) struct ServerState {
    pub(crate) engine: Mutex<Engine>,
    pub(crate) prepared: Mutex<HashMap<Vec<u8>, Arc<Prepared>>>,
    pub(crate) faults: Mutex<Vec<ArmedFault>>,
    pub(crate) stats: Mutex<ServerStats>,
    /// `LateWrite` writes answered with a timeout and not applied yet.
    pub(crate) late_writes: AtomicUsize,
    /// Bumped to close every open connection.
    pub(crate) disconnect: watch::Sender<u64>,
}

/// A running server. Dropping it stops the server and closes every connection.
pub struct CqlServer {
    address: SocketAddr,
    state: Arc<ServerState>,
    shutdown: watch::Sender<bool>,
}

impl CqlServer {
    /// Starts a server on 127.0.0.1 on a free port (needs a tokio runtime).
    pub async fn start() -> std::io::Result<CqlServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(ServerState {
            engine: Mutex::new(Engine::default()),
            prepared: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            stats: Mutex::new(ServerStats::default()),
            late_writes: AtomicUsize::new(0),
            disconnect: watch::channel(0).0,
        });
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let accept_state = state.clone();
        tokio::spawn(async move {
            let mut shutdown_receiver = shutdown_receiver;
            loop {
                tokio::select! {
                    _ = shutdown_receiver.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let _ = socket.set_nodelay(true);
                        tokio::spawn(serve_connection(socket, accept_state.clone(), shutdown_receiver.clone()));
                    }
                }
            }
        });
        Ok(CqlServer {
            address,
            state,
            shutdown,
        })
    }

    /// The address to give the driver (`SessionBuilder::new().known_node_addr(addr)`).
    pub fn addr(&self) -> SocketAddr {
        self.address
    }

    /// Arms a fault: the next `count` statements matching `matcher` get it.
    pub fn inject(&self, fault: Fault, matcher: StatementMatcher, count: usize) {
        self.state.faults.lock().push(ArmedFault {
            fault,
            matcher,
            remaining: count,
        });
    }

    /// How many injections of armed faults have not fired yet.
    pub fn pending_faults(&self) -> usize {
        self.state
            .faults
            .lock()
            .iter()
            .map(|armed| armed.remaining)
            .sum()
    }

    /// How many writes a `LateWrite` fault answered with a timeout are not applied yet (a
    /// test waits for 0 instead of sleeping past the delay).
    pub fn late_writes_in_flight(&self) -> usize {
        self.state.late_writes.load(Ordering::SeqCst)
    }

    /// Moves the server's clock forward (TTLs expire against it).
    pub fn advance_clock(&self, by: Duration) {
        self.state.engine.lock().clock_offset_ms += by.as_millis() as i64;
    }

    /// Forgets every prepared statement, as a restarted node does: the next EXECUTE of each
    /// gets an Unprepared error and the driver prepares again.
    pub fn forget_prepared_statements(&self) {
        self.state.prepared.lock().clear();
    }

    /// Closes every open connection (requests in flight get no answer); new connections are
    /// accepted. With [`Self::forget_prepared_statements`] this is a node restart that kept its data.
    pub fn drop_all_connections(&self) {
        self.state
            .disconnect
            .send_modify(|generation| *generation += 1);
    }

    /// What the server was asked to do so far.
    pub fn stats(&self) -> ServerStats {
        self.state.stats.lock().clone()
    }

    pub fn reset_stats(&self) {
        *self.state.stats.lock() = ServerStats::default();
    }
}

impl Drop for CqlServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn serve_connection(
    socket: TcpStream,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = socket.into_split();
    let (frames, mut outgoing) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let (close, mut closed) = watch::channel(false);
    let mut disconnect = state.disconnect.subscribe();
    let keyspace: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let writer_task = tokio::spawn(async move {
        // `None` asks the writer to drop the connection (an injected fault).
        while let Some(Some(frame)) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
        let _ = close.send(true);
    });
    loop {
        let frame = tokio::select! {
            _ = shutdown.changed() => break,
            _ = disconnect.changed() => break,
            _ = closed.changed() => break,
            frame = protocol::read_frame(&mut reader) => frame,
        };
        let frame = match frame {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err((stream, error)))) => {
                let _ = frames.send(Some(protocol::response(
                    stream,
                    protocol::OPCODE_ERROR,
                    &error.encode_body(),
                    &[],
                )));
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        let state = state.clone();
        let frames = frames.clone();
        let keyspace = keyspace.clone();
        tokio::spawn(async move {
            let stream = frame.stream;
            let mut handled = handle(&state, &keyspace, frame);
            if let Handled::Delayed(delay, reply) = handled {
                tokio::time::sleep(delay).await;
                handled = *reply;
            }
            match handled {
                Handled::Reply(opcode, body, warnings) => {
                    let _ = frames.send(Some(protocol::response(stream, opcode, &body, &warnings)));
                }
                Handled::Drop => {
                    let _ = frames.send(None);
                }
                Handled::Delayed(..) => {}
            }
        });
    }
    drop(frames);
    writer_task.abort();
}

enum Handled {
    Reply(u8, Vec<u8>, Vec<String>),
    Drop,
    /// The answer, sent after a delay (an injected fault).
    Delayed(Duration, Box<Handled>),
}

fn error_reply(error: CqlError) -> Handled {
    Handled::Reply(protocol::OPCODE_ERROR, error.encode_body(), Vec::new())
}

fn handle(
    state: &Arc<ServerState>,
    keyspace: &Mutex<Option<String>>,
    frame: RequestFrame,
) -> Handled {
    let _ = frame.version;
    let features = ProtocolFeatures::default();
    let mut body: &[u8] = &frame.body;
    let result = match frame.opcode {
        protocol::OPCODE_OPTIONS => return Handled::Reply(protocol::OPCODE_SUPPORTED, protocol::supported_body(), Vec::new()),
        protocol::OPCODE_STARTUP => match Startup::deserialize_with_features(&mut body, &features) {
            Ok(startup) if startup.options.keys().any(|key| key == "COMPRESSION") => {
                Err(CqlError::protocol("Unknown compression algorithm: compression is not supported by this test server"))
            }
            Ok(_) => return Handled::Reply(protocol::OPCODE_READY, Vec::new(), Vec::new()),
            Err(error) => Err(CqlError::protocol(format!("malformed STARTUP: {error}"))),
        },
        protocol::OPCODE_REGISTER => return Handled::Reply(protocol::OPCODE_READY, Vec::new(), Vec::new()),
        protocol::OPCODE_PREPARE => handle_prepare(state, keyspace, body),
        protocol::OPCODE_QUERY => match Query::deserialize_with_features(&mut body, &features) {
            Ok(query) => {
                state.stats.lock().queries += 1;
                let session_keyspace = keyspace.lock().clone();
                let prepared = state.engine.lock().prepare(&query.contents, session_keyspace.as_deref());
                match prepared {
                    Ok(prepared) => run_statement(state, keyspace, Arc::new(prepared), &query.parameters),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(CqlError::protocol(format!("malformed QUERY: {error}"))),
        },
        protocol::OPCODE_EXECUTE => match ExecuteV2::deserialize_with_features(&mut body, &features) {
            Ok(execute) => {
                let id: &[u8] = execute.id.as_ref();
                let prepared = state.prepared.lock().get(id).cloned();
                match prepared {
                    Some(prepared) => {
                        state.stats.lock().executes += 1;
                        run_statement(state, keyspace, prepared, &execute.parameters)
                    }
                    None => Err(CqlError::Unprepared { id: id.to_vec() }),
                }
            }
            Err(error) => Err(CqlError::protocol(format!("malformed EXECUTE: {error}"))),
        },
        protocol::OPCODE_BATCH => {
            match Batch::<BatchStatement<'_>, Vec<SerializedValues>>::deserialize_with_features(&mut body, &features) {
                Ok(batch) => run_batch(state, keyspace, batch),
                Err(error) => Err(CqlError::protocol(format!("malformed BATCH: {error}"))),
            }
        }
        other => Err(CqlError::protocol(format!("unsupported opcode {other:#04x}"))),
    };
    match result {
        Ok(handled) => handled,
        Err(error) => error_reply(error),
    }
}

fn handle_prepare(
    state: &ServerState,
    keyspace: &Mutex<Option<String>>,
    mut body: &[u8],
) -> Result<Handled, CqlError> {
    let text = protocol::read_long_string(&mut body)?;
    state.stats.lock().prepares += 1;
    let session_keyspace = keyspace.lock().clone();
    let prepared = state
        .engine
        .lock()
        .prepare(&text, session_keyspace.as_deref())?;
    let reply = protocol::prepared_body(&prepared);
    state
        .prepared
        .lock()
        .insert(prepared.id.clone(), Arc::new(prepared));
    Ok(Handled::Reply(protocol::OPCODE_RESULT, reply, Vec::new()))
}

fn consult_faults(state: &ServerState, texts: &[&str]) -> Option<Fault> {
    let mut faults = state.faults.lock();
    let armed = faults.iter_mut().find(|armed| {
        armed.remaining > 0 && texts.iter().any(|text| armed.matcher.matches(text))
    })?;
    armed.remaining -= 1;
    let fault = armed.fault.clone();
    faults.retain(|armed| armed.remaining > 0);
    Some(fault)
}

fn run_statement(
    state: &Arc<ServerState>,
    keyspace: &Mutex<Option<String>>,
    prepared: Arc<Prepared>,
    parameters: &scylla_cql::frame::request::query::QueryParameters<'_>,
) -> Result<Handled, CqlError> {
    let consistency = parameters.consistency as u16;
    let raw: Vec<_> = parameters.values.iter().collect();
    let binds: Vec<Bound> = decode_binds(&prepared.bind_specs, &raw)?;
    let page = PageRequest {
        page_size: parameters.page_size,
        paging_state: parameters
            .paging_state
            .as_bytes_slice()
            .map(|bytes| bytes.to_vec()),
    };
    let write_type = if prepared.is_conditional {
        "CAS"
    } else {
        "SIMPLE"
    };
    state.stats.lock().record(
        &prepared.text,
        format!("{:?}", parameters.consistency),
        prepared
            .is_conditional
            .then_some(parameters.serial_consistency)
            .flatten()
            .map(|serial| format!("{serial:?}")),
    );
    let outcome = consult_faults(state, &[prepared.text.as_str()])
        .map(|fault| fault.outcome(consistency, write_type));
    let execute = |state: &ServerState| {
        let session_keyspace = keyspace.lock().clone();
        state.engine.lock().execute(
            &prepared,
            &binds,
            &page,
            session_keyspace.as_deref(),
            parameters.timestamp,
        )
    };
    let mut delay = None;
    match outcome {
        Some(FaultOutcome::Drop) => return Ok(Handled::Drop),
        Some(FaultOutcome::FailBefore(error)) => return Err(error),
        Some(FaultOutcome::FailAfter(error)) => {
            execute(state)?;
            return Err(error);
        }
        Some(FaultOutcome::FailAfterPartial(applied_statements, error)) => {
            if applied_statements > 0 {
                execute(state)?;
            }
            return Err(error);
        }
        Some(FaultOutcome::ApplyLater(delay, error)) => {
            let timestamp = parameters
                .timestamp
                .unwrap_or_else(|| state.engine.lock().next_timestamp());
            let state = state.clone();
            let session_keyspace = keyspace.lock().clone();
            state.late_writes.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = state.engine.lock().execute(
                    &prepared,
                    &binds,
                    &PageRequest::default(),
                    session_keyspace.as_deref(),
                    Some(timestamp),
                );
                state.late_writes.fetch_sub(1, Ordering::SeqCst);
            });
            return Err(error);
        }
        Some(FaultOutcome::Delay(duration)) => delay = Some(duration),
        None => {}
    }
    let result = execute(state)?;
    if let ExecResult::SetKeyspace(name) = &result {
        *keyspace.lock() = Some(name.clone());
    }
    if matches!(result, ExecResult::SchemaChange(_)) {
        // Statements prepared against the old schema must be prepared again.
        let engine = state.engine.lock();
        state
            .prepared
            .lock()
            .retain(|_, prepared| match &prepared.table {
                Some((keyspace, table)) => engine.catalog.table(keyspace, table).is_ok(),
                None => true,
            });
    }
    let reply = Handled::Reply(
        protocol::OPCODE_RESULT,
        protocol::result_body(&result),
        Vec::new(),
    );
    Ok(match delay {
        Some(duration) => Handled::Delayed(duration, Box::new(reply)),
        None => reply,
    })
}

fn run_batch(
    state: &Arc<ServerState>,
    keyspace: &Mutex<Option<String>>,
    batch: Batch<'_, BatchStatement<'_>, Vec<SerializedValues>>,
) -> Result<Handled, CqlError> {
    if matches!(batch.batch_type, BatchType::Counter) {
        return Err(CqlError::invalid(
            "Counter batches are not supported by this test server",
        ));
    }
    let consistency = batch.consistency as u16;
    let session_keyspace = keyspace.lock().clone();
    state.stats.lock().batches += 1;
    let mut statements = Vec::new();
    for (statement, values) in batch.statements.iter().zip(&batch.values) {
        let prepared = match statement {
            BatchStatement::Query { text } => Arc::new(
                state
                    .engine
                    .lock()
                    .prepare(text, session_keyspace.as_deref())?,
            ),
            BatchStatement::Prepared { id } => {
                let id: &[u8] = id.as_ref();
                state
                    .prepared
                    .lock()
                    .get(id)
                    .cloned()
                    .ok_or_else(|| CqlError::Unprepared { id: id.to_vec() })?
            }
        };
        let raw: Vec<_> = values.iter().collect();
        let binds = decode_binds(&prepared.bind_specs, &raw)?;
        statements.push((prepared, binds));
    }
    let texts: Vec<&str> = statements
        .iter()
        .map(|(prepared, _)| prepared.text.as_str())
        .collect();
    let write_type = if statements
        .iter()
        .any(|(prepared, _)| prepared.is_conditional)
    {
        "CAS"
    } else if matches!(batch.batch_type, BatchType::Logged) {
        "BATCH"
    } else {
        "UNLOGGED_BATCH"
    };
    {
        let mut stats = state.stats.lock();
        let serial = batch.serial_consistency.map(|serial| format!("{serial:?}"));
        let conditional = statements
            .iter()
            .any(|(prepared, _)| prepared.is_conditional);
        for text in &texts {
            let serial = if conditional { serial.clone() } else { None };
            stats.record(text, format!("{:?}", batch.consistency), serial);
        }
    }
    let outcome = consult_faults(state, &texts).map(|fault| fault.outcome(consistency, write_type));
    let batch_timestamp = batch.timestamp;
    let execute = |statements: &[(Arc<Prepared>, Vec<Bound>)], timestamp: Option<i64>| {
        crate::write::execute_batch(&mut state.engine.lock(), statements, timestamp)
    };
    let mut delay = None;
    match outcome {
        Some(FaultOutcome::Drop) => return Ok(Handled::Drop),
        Some(FaultOutcome::FailBefore(error)) => return Err(error),
        Some(FaultOutcome::FailAfter(error)) => {
            execute(&statements, batch_timestamp)?;
            return Err(error);
        }
        Some(FaultOutcome::FailAfterPartial(applied_statements, error)) => {
            // Each statement applied on its own, as replicas of different partitions would,
            // all with the batch's one timestamp.
            let timestamp = batch_timestamp.unwrap_or_else(|| state.engine.lock().next_timestamp());
            for statement in statements.iter().take(applied_statements) {
                execute(std::slice::from_ref(statement), Some(timestamp))?;
            }
            return Err(error);
        }
        Some(FaultOutcome::ApplyLater(delay, error)) => {
            let timestamp = batch_timestamp.unwrap_or_else(|| state.engine.lock().next_timestamp());
            let state = state.clone();
            state.late_writes.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = crate::write::execute_batch(
                    &mut state.engine.lock(),
                    &statements,
                    Some(timestamp),
                );
                state.late_writes.fetch_sub(1, Ordering::SeqCst);
            });
            return Err(error);
        }
        Some(FaultOutcome::Delay(duration)) => delay = Some(duration),
        None => {}
    }
    let (result, warnings) = execute(&statements, batch_timestamp)?;
    let reply = Handled::Reply(
        protocol::OPCODE_RESULT,
        protocol::result_body(&result),
        warnings,
    );
    Ok(match delay {
        Some(duration) => Handled::Delayed(duration, Box::new(reply)),
        None => reply,
    })
}

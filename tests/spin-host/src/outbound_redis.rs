//! Spin's outbound Redis interface, `fermyon:spin/redis@2.0.0`, on the `redis` crate:
//! one multiplexed connection per `connection` resource, to Redis servers on 127.0.0.1
//! or [::1] only. Other addresses get `invalid-address`, the error Spin returns for a
//! host missing from `allowed_outbound_hosts`.
//!
//! `execute` returns the reply as Spin does: arrays are flattened into one list, nil
//! and `OK` replies are left out, and server errors are `other` with the client's
//! message.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, Value};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::RequestState;

wasmtime::component::bindgen!({
    inline: "
        package fermyon:spin@2.0.0;

        interface redis {
            variant error {
                invalid-address,
                too-many-connections,
                type-error,
                other(string),
            }

            resource connection {
                open: static func(address: string) -> result<connection, error>;
                publish: func(channel: string, payload: payload) -> result<_, error>;
                get: func(key: string) -> result<option<payload>, error>;
                set: func(key: string, value: payload) -> result<_, error>;
                incr: func(key: string) -> result<s64, error>;
                del: func(keys: list<string>) -> result<u32, error>;
                sadd: func(key: string, values: list<string>) -> result<u32, error>;
                smembers: func(key: string) -> result<list<string>, error>;
                srem: func(key: string, values: list<string>) -> result<u32, error>;
                execute: func(command: string, arguments: list<redis-parameter>) -> result<list<redis-result>, error>;
            }

            type payload = list<u8>;

            variant redis-parameter {
                int64(s64),
                binary(payload)
            }

            variant redis-result {
                nil,
                status(string),
                int64(s64),
                binary(payload)
            }
        }

        world spin-redis {
            import redis;
        }
    ",
    imports: { default: async },
    with: {
        "fermyon:spin/redis.connection": OpenConnection,
    },
});

use fermyon::spin::redis::{Error, Host, HostConnection, Payload, RedisParameter, RedisResult};

/// Maximum connections one instance may hold open at once, so a component that opens
/// connections in a loop gets `too-many-connections` instead of exhausting the host.
const MAX_OPEN_CONNECTIONS: usize = 16;

/// Time to connect to a server, which is on this machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time for a server to reply to one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection the component opened.
pub struct OpenConnection {
    connection: MultiplexedConnection,
}

/// Adds the Redis interface to `linker`.
pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    fermyon::spin::redis::add_to_linker::<RequestState, HasSelf<RequestState>>(linker, |state| {
        state
    })
}

impl Host for RequestState {}

impl RequestState {
    /// Returns a handle to an open connection. A handle missing from the table is a
    /// host bug, reported to the component as `other`.
    fn redis_connection(
        &self,
        connection: &Resource<OpenConnection>,
    ) -> Result<MultiplexedConnection, Error> {
        self.table
            .get(connection)
            .map(|open| open.connection.clone())
            .map_err(|error| Error::Other(error.to_string()))
    }
}

impl HostConnection for RequestState {
    async fn open(&mut self, address: String) -> Result<Resource<OpenConnection>, Error> {
        if self.open_redis_connections >= MAX_OPEN_CONNECTIONS {
            return Err(Error::TooManyConnections);
        }
        let info = address
            .as_str()
            .into_connection_info()
            .map_err(|_| Error::InvalidAddress)?;
        if !is_loopback(info.addr()) {
            // The address may carry a password, so only the host part is logged.
            eprintln!(
                "gatehouse-spin-host: denied a Redis connection to {}: only 127.0.0.1 and \
                 [::1] are allowed",
                describe_address(info.addr())
            );
            return Err(Error::InvalidAddress);
        }
        let client = Client::open(info).map_err(|error| Error::Other(error.to_string()))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| Error::Other(error.to_string()))?;
        let handle = self
            .table
            .push(OpenConnection { connection })
            .map_err(|error| Error::Other(error.to_string()))?;
        self.open_redis_connections += 1;
        Ok(handle)
    }

    async fn publish(
        &mut self,
        connection: Resource<OpenConnection>,
        channel: String,
        payload: Payload,
    ) -> Result<(), Error> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        send(self.redis_connection(&connection)?, command)
            .await
            .map(|_| ())
    }

    async fn get(
        &mut self,
        connection: Resource<OpenConnection>,
        key: String,
    ) -> Result<Option<Payload>, Error> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        match send(self.redis_connection(&connection)?, command).await? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            _ => Err(Error::TypeError),
        }
    }

    async fn set(
        &mut self,
        connection: Resource<OpenConnection>,
        key: String,
        value: Payload,
    ) -> Result<(), Error> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value);
        send(self.redis_connection(&connection)?, command)
            .await
            .map(|_| ())
    }

    async fn incr(
        &mut self,
        connection: Resource<OpenConnection>,
        key: String,
    ) -> Result<i64, Error> {
        let mut command = redis::cmd("INCR");
        command.arg(key);
        match send(self.redis_connection(&connection)?, command).await? {
            Value::Int(number) => Ok(number),
            _ => Err(Error::TypeError),
        }
    }

    async fn del(
        &mut self,
        connection: Resource<OpenConnection>,
        keys: Vec<String>,
    ) -> Result<u32, Error> {
        let mut command = redis::cmd("DEL");
        command.arg(keys);
        count_reply(send(self.redis_connection(&connection)?, command).await?)
    }

    async fn sadd(
        &mut self,
        connection: Resource<OpenConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        let mut command = redis::cmd("SADD");
        command.arg(key).arg(values);
        count_reply(send(self.redis_connection(&connection)?, command).await?)
    }

    async fn smembers(
        &mut self,
        connection: Resource<OpenConnection>,
        key: String,
    ) -> Result<Vec<String>, Error> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(key);
        let members = match send(self.redis_connection(&connection)?, command).await? {
            Value::Array(members) | Value::Set(members) => members,
            _ => return Err(Error::TypeError),
        };
        members
            .into_iter()
            .map(|member| match member {
                Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| Error::TypeError),
                _ => Err(Error::TypeError),
            })
            .collect()
    }

    async fn srem(
        &mut self,
        connection: Resource<OpenConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        let mut command = redis::cmd("SREM");
        command.arg(key).arg(values);
        count_reply(send(self.redis_connection(&connection)?, command).await?)
    }

    async fn execute(
        &mut self,
        connection: Resource<OpenConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Vec<RedisResult>, Error> {
        let mut packed = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(number) => packed.arg(number),
                RedisParameter::Binary(bytes) => packed.arg(bytes),
            };
        }
        let reply = send(self.redis_connection(&connection)?, packed).await?;
        let mut results = Vec::new();
        flatten_reply(reply, &mut results)?;
        Ok(results)
    }

    async fn drop(&mut self, connection: Resource<OpenConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        self.open_redis_connections = self.open_redis_connections.saturating_sub(1);
        Ok(())
    }
}

/// Sends `command` on `connection` and returns the raw reply.
async fn send(mut connection: MultiplexedConnection, command: redis::Cmd) -> Result<Value, Error> {
    connection
        .send_packed_command(&command)
        .await
        .map_err(|error| Error::Other(error.to_string()))
}

/// Reads an integer reply as a count.
fn count_reply(reply: Value) -> Result<u32, Error> {
    match reply {
        Value::Int(count) => u32::try_from(count).map_err(|_| Error::TypeError),
        _ => Err(Error::TypeError),
    }
}

/// Appends `reply` to `results`, arrays element by element, as Spin's host does.
fn flatten_reply(reply: Value, results: &mut Vec<RedisResult>) -> Result<(), Error> {
    match reply {
        Value::Nil | Value::Okay => {}
        Value::Int(number) => results.push(RedisResult::Int64(number)),
        Value::BulkString(bytes) => results.push(RedisResult::Binary(bytes)),
        Value::SimpleString(text) => results.push(RedisResult::Status(text)),
        Value::Array(values) | Value::Set(values) => {
            for value in values {
                flatten_reply(value, results)?;
            }
        }
        Value::ServerError(error) => {
            return Err(Error::Other(redis::RedisError::from(error).to_string()));
        }
        // RESP3 types; servers send them only to clients that ask for RESP3, which
        // this host never does.
        _ => return Err(Error::TypeError),
    }
    Ok(())
}

/// Tells whether `address` is a TCP address on 127.0.0.1 or [::1].
fn is_loopback(address: &ConnectionAddr) -> bool {
    let ConnectionAddr::Tcp(host, _) = address else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn describe_address(address: &ConnectionAddr) -> String {
    match address {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port} (TLS)"),
        _ => "a Unix socket".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_allowed() {
        let allowed = |url: &str| is_loopback(url.into_connection_info().unwrap().addr());
        assert!(allowed("redis://127.0.0.1:6379/0"));
        assert!(allowed("redis://:secret@127.0.0.1:6380"));
        assert!(allowed("redis://[::1]:6379"));
        assert!(!allowed("redis://10.0.0.5:6379"));
        assert!(!allowed("redis://localhost:6379"));
    }

    #[test]
    fn arrays_flattened_and_nil_dropped() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Nil,
            Value::Array(vec![Value::BulkString(b"x".to_vec())]),
            Value::Okay,
        ]);
        let mut results = Vec::new();
        flatten_reply(reply, &mut results).unwrap();
        assert_eq!(results.len(), 2);
        assert!(matches!(results[0], RedisResult::Int64(1)));
        assert!(matches!(&results[1], RedisResult::Binary(bytes) if bytes == b"x"));
    }
}

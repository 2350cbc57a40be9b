//! Sending raw bytes as a gRPC request body, bypassing the typed client.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// Calls the unary method at `path` (e.g. `/zonekv.kv.v1.Kv/Put`) with `body` as the encoded
/// request; returns the raw response body.
pub async fn call(channel: &Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(tonic::Request::new(body), PathAndQuery::from_static(path), RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// Calls the bidirectional streaming method at `path` with one message, `body`, then ends the
/// request stream; returns every raw response message, or the status the stream ended with.
pub async fn stream_once(
    channel: &Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    use futures::StreamExt;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = tonic::Request::new(futures::stream::once(std::future::ready(body)));
    let mut answers = grpc.streaming(request, PathAndQuery::from_static(path), RawCodec).await?.into_inner();
    let mut out = Vec::new();
    while let Some(msg) = answers.next().await {
        out.push(msg?);
    }
    Ok(out)
}

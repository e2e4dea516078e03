//! The [`Remote`] operations of the WebDAV client: each one a request (or a few) built and
//! checked by the helpers of `mod.rs`.

use super::*;
#[async_trait]
impl Remote for WebDavRemote {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        let (url, raws) = self
            .propfind(self.url(path, false), "0", PROPFIND_ENTRY_BODY)
            .await?;
        let mut found = None;
        for raw in &raws {
            if raw.status.is_some_and(|s| !(200..300).contains(&s)) {
                continue;
            }
            let e = self.entry_from(&url, raw)?;
            if e.path == *path {
                found = Some(e);
                break;
            }
        }
        let mut entry = found.ok_or_else(|| {
            self.bad(
                "PROPFIND",
                &url,
                format!("reply does not describe {path} ({} responses)", raws.len()),
            )
        })?;
        if entry.kind == EntryKind::File && entry.etag.is_none() {
            entry.etag = self.head_etag(path).await?;
        }
        Ok(entry)
    }

    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        let (url, bytes) = self.listing_reply(path).await?;
        self.listing_from(path, &url, bytes)
    }

    async fn list_unless(
        &self,
        path: &RemotePath,
        known: Option<&ListingDigest>,
    ) -> RemoteResult<MaybeListing> {
        let (url, bytes) = self.listing_reply(path).await?;
        // The same reply from the same URL is the same listing: compared before it is parsed.
        let digest = ListingDigest::of_reply(url.as_str(), &bytes);
        if known == Some(&digest) {
            return Ok(MaybeListing::Unchanged);
        }
        let listing = self.listing_from(path, &url, bytes)?;
        Ok(MaybeListing::Listed(listing, digest))
    }

    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        if range.len == Some(0) {
            return Ok(ReadResponse {
                etag: expect.cloned(),
                total_size: None,
                body: empty_stream(),
            });
        }
        let url = self.url(path, false);
        let m = Method::GET;
        let range_hdr = match range.end() {
            Some(end) => format!("bytes={}-{}", range.start, end - 1),
            None => format!("bytes={}-", range.start),
        };
        let mut req = Req::new(m.clone(), url.clone()).header("range", &range_hdr);
        if let Some(e) = expect.filter(|e| !e.is_weak()) {
            req = req.header("if-match", &e.header_value());
        }
        let mut resp = self.send(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let got_etag = header_str(&headers, reqwest::header::ETAG).and_then(ETag::parse);
        if status == StatusCode::PRECONDITION_FAILED {
            return Err(RemoteError::VersionChanged {
                url: url.to_string(),
                expected: expect.cloned().unwrap_or_else(|| ETag::strong("?")),
                actual: got_etag
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "a newer version".into()),
            });
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(RemoteError::IsADirectory {
                url: url.to_string(),
            });
        }
        if let (Some(exp), Some(got)) = (expect, got_etag.as_ref()) {
            if exp != got {
                return Err(RemoteError::VersionChanged {
                    url: url.to_string(),
                    expected: exp.clone(),
                    actual: got.to_string(),
                });
            }
        }
        let etag = got_etag.or_else(|| expect.cloned());
        match status {
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = header_str(&headers, reqwest::header::CONTENT_RANGE)
                    .and_then(parse_unsatisfied_range);
                if let Some(t) = total {
                    if range.start < t {
                        return Err(self.bad(
                            "GET",
                            &url,
                            format!("416 for {range_hdr} although the file has {t} bytes"),
                        ));
                    }
                }
                Ok(ReadResponse {
                    etag,
                    total_size: total,
                    body: empty_stream(),
                })
            }
            StatusCode::PARTIAL_CONTENT => {
                let cr = header_str(&headers, reqwest::header::CONTENT_RANGE).ok_or_else(|| {
                    self.bad(
                        "GET",
                        &url,
                        "206 without Content-Range (multipart replies are not supported)",
                    )
                })?;
                let (a, b, total) = parse_content_range(cr)
                    .ok_or_else(|| self.bad("GET", &url, format!("bad Content-Range {cr:?}")))?;
                let asked_last = range.end().map(|e| e - 1);
                let short_at_eof = total.is_some_and(|t| b + 1 == t);
                let ok = a == range.start
                    && match asked_last {
                        Some(last) => b == last || (b < last && short_at_eof),
                        None => total.is_none_or(|t| b + 1 == t),
                    };
                if !ok {
                    return Err(self.bad(
                        "GET",
                        &url,
                        format!("asked {range_hdr}, server sent Content-Range {cr:?}"),
                    ));
                }
                let n = b - a + 1;
                Ok(ReadResponse {
                    etag,
                    total_size: total,
                    body: self.cfg.bandwidth.download(Box::pin(RangeBody {
                        _slot: resp.extensions_mut().remove::<Slot>(),
                        inner: Box::pin(resp.bytes_stream()),
                        idle: self.cfg.read_timeout,
                        sleep: None,
                        skip: 0,
                        take: Some(n),
                        expect: Some(n),
                        yielded: 0,
                        done: false,
                        url,
                    })),
                })
            }
            StatusCode::OK => {
                // The server ignored Range: cut the whole body down to the range.
                let total = resp.content_length();
                if range.start > 0 {
                    tracing::debug!(url = %url, "server ignored Range; skipping {} bytes", range.start);
                }
                let expect_len = total.map(|t| {
                    let avail = t.saturating_sub(range.start);
                    range.len.map_or(avail, |l| l.min(avail))
                });
                Ok(ReadResponse {
                    etag,
                    total_size: total,
                    body: self.cfg.bandwidth.download(Box::pin(RangeBody {
                        _slot: resp.extensions_mut().remove::<Slot>(),
                        inner: Box::pin(resp.bytes_stream()),
                        idle: self.cfg.read_timeout,
                        sleep: None,
                        skip: range.start,
                        take: range.len,
                        expect: expect_len,
                        yielded: 0,
                        done: false,
                        url,
                    })),
                })
            }
            s => Err(status_error(&m, &url, s)),
        }
    }

    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        self.put_learning(path, body, cond, true).await
    }

    async fn put_unversioned(&self, path: &RemotePath, body: PutBody) -> RemoteResult<()> {
        self.put_learning(path, body, PutCondition::None, false)
            .await
            .map(|_| ())
    }

    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        if path.is_root() {
            return Err(RemoteError::AlreadyExists {
                url: self.base.to_string(),
            });
        }
        let m = method("MKCOL");
        let url = self.url(path, true);
        let resp = self.send(Req::new(m.clone(), url.clone())).await?;
        match resp.status() {
            StatusCode::METHOD_NOT_ALLOWED => Err(RemoteError::AlreadyExists {
                url: url.to_string(),
            }),
            s => Self::ok_or_status(&m, &url, s),
        }
    }

    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        if path.is_root() {
            return Err(RemoteError::InvalidPath {
                path: "/".into(),
                reason: "cannot delete the base collection".into(),
            });
        }
        let m = Method::DELETE;
        let url = self.url(path, false);
        let mut resp = self.send(Req::new(m.clone(), url)).await?;
        if resp.status() == StatusCode::CONFLICT && self.is_collection(path).await {
            // nginx deletes a collection only by its URL with a trailing slash (409 otherwise).
            resp = self.send(Req::new(m.clone(), self.url(path, true))).await?;
        }
        let url = resp.url().clone();
        Self::ok_or_status(&m, &url, resp.status())
    }

    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        self.move_or_copy("MOVE", from, to, overwrite).await
    }

    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        self.move_or_copy("COPY", from, to, overwrite).await
    }

    async fn quota(&self) -> RemoteResult<Quota> {
        let (url, raws) = self
            .propfind(self.base.clone(), "0", PROPFIND_QUOTA_BODY)
            .await?;
        for raw in &raws {
            let p = href_to_path(&self.base, &url, &raw.href)
                .map_err(|r| self.bad("PROPFIND", &url, r))?;
            if p.is_root() {
                return Ok(Quota {
                    used: raw.props.quota_used,
                    available: raw.props.quota_available,
                });
            }
        }
        Err(self.bad(
            "PROPFIND",
            &url,
            "reply does not describe the base collection",
        ))
    }
}

impl WebDavRemote {
    /// The reply to a listing's PROPFIND (depth 1), and the URL it came from. A file's path
    /// or a missing one is told apart here (`file/` is 404 on most servers).
    async fn listing_reply(&self, path: &RemotePath) -> RemoteResult<(Url, Vec<u8>)> {
        let res = self
            .propfind_bytes(self.url(path, true), "1", PROPFIND_ENTRY_BODY)
            .await;
        match res {
            Err(
                RemoteError::NotFound { url }
                | RemoteError::Status {
                    url, status: 400, ..
                },
            ) if !path.is_root() => match self.stat(path).await {
                Ok(e) if !e.is_dir() => Err(RemoteError::NotADirectory { url }),
                Ok(_) | Err(RemoteError::NotFound { .. }) => Err(RemoteError::NotFound { url }),
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    /// The listing of `path` out of its PROPFIND reply from `url`.
    fn listing_from(&self, path: &RemotePath, url: &Url, bytes: Vec<u8>) -> RemoteResult<Listing> {
        let raws = Self::parse_propfind(url, &bytes)?;
        drop(bytes);
        let mut dir = None;
        let mut children: Vec<Entry> = Vec::with_capacity(raws.len().saturating_sub(1));
        let mut seen = std::collections::HashSet::with_capacity(raws.len());
        for raw in &raws {
            if raw.status.is_some_and(|s| !(200..300).contains(&s)) {
                continue;
            }
            let e = self.entry_from(url, raw)?;
            if e.path == *path {
                if !e.is_dir() {
                    return Err(RemoteError::NotADirectory {
                        url: url.to_string(),
                    });
                }
                dir = Some(e);
            } else if e.path.parent().as_ref() == Some(path) {
                if seen.insert(e.path.name().to_string()) {
                    children.push(e);
                } else {
                    tracing::warn!(url = %url, name = e.path.name(), "server listed a name twice; keeping the first");
                }
            } else {
                return Err(self.bad(
                    "PROPFIND",
                    url,
                    format!(
                        "listing of {path} names {}, which is not a direct child",
                        e.path
                    ),
                ));
            }
        }
        let dir = dir.unwrap_or_else(|| Entry {
            path: path.clone(),
            kind: EntryKind::Dir,
            size: 0,
            mtime: None,
            etag: None,
            content_type: None,
        });
        Ok(Listing { dir, children })
    }

    /// A PUT; with `learn`, the version is asked for when the answer has no ETag.
    async fn put_learning(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
        learn: bool,
    ) -> RemoteResult<PutOutcome> {
        if path.is_root() {
            return Err(RemoteError::IsADirectory {
                url: self.base.to_string(),
            });
        }
        let url = self.url(path, false);
        if self.cfg.verify_conditions && cond != PutCondition::None {
            let current = match self.stat(path).await {
                Ok(e) => Some(e),
                Err(RemoteError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            let refused = match (&cond, &current) {
                (_, Some(e)) if e.is_dir() => {
                    return Err(RemoteError::IsADirectory {
                        url: url.to_string(),
                    })
                }
                (PutCondition::IfNoneMatch, Some(_)) => true,
                (PutCondition::IfMatch(_), None) => true,
                (PutCondition::IfMatch(want), Some(e)) => {
                    e.etag.as_ref().is_some_and(|g| g != want)
                }
                _ => false,
            };
            if refused {
                return Err(RemoteError::PreconditionFailed {
                    url: url.to_string(),
                });
            }
        }
        let m = Method::PUT;
        let mut req = Req::new(m.clone(), url.clone());
        match &cond {
            PutCondition::IfMatch(e) if !e.is_weak() => {
                req = req.header("if-match", &e.header_value());
            }
            PutCondition::IfNoneMatch => req = req.header("if-none-match", "*"),
            _ => {}
        }
        req.body = ReqBody::Put(body);
        let resp = self.send(req).await?;
        let status = resp.status();
        let etag = header_str(resp.headers(), reqwest::header::ETAG).and_then(ETag::parse);
        match status {
            s if s.is_success() => {}
            StatusCode::METHOD_NOT_ALLOWED => {
                return Err(RemoteError::IsADirectory {
                    url: url.to_string(),
                })
            }
            s => return Err(status_error(&m, &url, s)),
        }
        let etag = match etag {
            Some(e) => Some(e),
            None if !learn => None,
            None => match self.stat(path).await {
                Ok(e) => e.etag,
                Err(e) => {
                    tracing::debug!(error = %e, url = %url, "no ETag after PUT");
                    None
                }
            },
        };
        Ok(PutOutcome { etag })
    }
}

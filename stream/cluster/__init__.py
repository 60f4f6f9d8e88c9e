"""Beyond one machine: the model workers as replicas of a Ray Serve deployment, behind transport fronts.

    clients ──► front (stream/server: WebSocket + WebRTC, /health, /metrics)   one or many processes
                  │ ClusterBatcher / RemoteStreamHandle (front.py): the Batcher's API, forwarded
                  │ Ray Serve DeploymentHandle + SessionAffinityRouter (router.py): a session's calls
                  ▼ all go to the replica that opened it
              replica = SessionWorker (worker.py): one local Batcher and the sessions pinned to it

The boundary between the two sides is narrow (boundary.py): a session id, PCM chunks, prompt updates and
video frames go in; PCM chunks and metrics come out. Batching stays inside each replica, across all the
sessions pinned to it. `deploy.py` builds the Serve application (also from a `serve run` YAML file) and
starts or joins the Ray cluster. docs/scaling.md describes the whole.

Only deploy.py and router.py import Ray, and only when called: the rest of samstream runs without it.
"""

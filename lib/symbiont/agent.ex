defmodule Symbiont.Agent do
  @moduledoc """
  An agent: one bounded context whose logic is a Python class or a Wasm module, run in a
  host. On the BEAM each agent (each replica) is a `Symbiont.Agent.Server` with its own
  name, queue, state, health and supervision; a Python agent's replica gets a host
  process of its own, Wasm agents share hosts (see `Symbiont.Manifest.plan/2`), and a
  trap in one of them leaves its neighbours serving.

  Agents are declared in the application environment and started with the application:

      config :symbiont,
        python_path: ["examples/demo"],
        agents: [
          [name: "orders", python: "demo_agents:Orders"],
          [name: "billing", python: "demo_agents:Billing", config: %{"currency" => "EUR"}]
        ]

  The Python side subclasses `symbiont.Agent`; its `@on("topic")` handlers subscribe it to
  mesh topics, `@every(seconds)` handlers run on a timer, `self.state` is checkpointed
  with each acknowledgement and restored after a crash, and `self.publish(topic, value)`
  sends events (PROTOCOL.md §8).

  ## Spec keys

    * `:name` (required) - a string of letters, digits, `_`, `-` and `.`, unique per node.
    * `:python` - `"module:Class"`, the importable module and the class in it.
    * `:wasm` (instead of `:python`) - the path of a Wasm module (`.wasm` or `.wat`)
      implementing docs/WASM_ABI.md, or of a component of the `symbiont:agent` world
      (`wit/agent.wit`; `symbiont build-wasm file.py:Class -o agent.wasm` builds one from
      a Python agent class), told apart by the binary's header; it runs in a Python
      host, sandboxed.
    * `:topics` (Wasm agents; required for a core module) - the topics it consumes. A
      component without them consumes its own (a Python agent's `@on` topics).
    * `:limits` (Wasm agents) - its sandbox (docs/WASM_ABI.md §5), positive integers:
      `deadline_ms` (default 100), `fuel` (none by default), `memory_bytes` (default
      64 MiB), `table_elements` (10_000), `instances` (1), `tables` (1), `memories` (1),
      `publishes` (events per call, 1_000), `publish_bytes` (16 MiB per call); and
      `grants`, any of `clock`, `random`, `stdout` (none by default).
    * `:config` - a map handed to the agent as `self.config` (a Wasm module gets it in
      `symbiont_init`). Default: `%{}`.
    * `:replicas` - how many copies of the agent run; they form the queue group named
      after it, so each event reaches one of them. The first is registered under the
      agent's name, the others as `"name#2"`, `"name#3"`... Default: 1.
    * `:min_replicas`, `:max_replicas` - the range the conductor may scale the agent in
      (`Symbiont.Conductor`); `Symbiont.scale/2` by hand is not bounded by them. Default:
      1 and the larger of `:replicas` and 4.
    * `:required` - the conductor never retires the last replica of a required agent.
      Default: `true`.
    * `:max_queue` - how many events may wait for the agent (accepted, not yet sent to
      its process). Default: 10 000.
    * `:max_queue_bytes` - how many bytes of payload the events waiting for the agent
      may hold in all. The overflow policy applies to bytes as to events: a queue is full
      when either bound is reached. An event larger than this on its own is never
      queued: it goes to the dead letters (`"too_large"`), and a checked publish gets
      `{:error, :too_large}`. Default: the `:max_queue_bytes` application env, else
      256 MiB.
    * `:max_in_flight` - how many events may be sent to its process and not yet
      acknowledged (the credit window). Default: 100. (The other way, what the agent
      publishes has a window too, PROTOCOL.md §8.2: its host waits while 1,024 publishes
      or 4 MiB are not taken in yet, or while an agent on this node that subscribes to
      them has thousands of events waiting in its mailbox.)
    * `:max_in_flight_bytes` - how many bytes of payload the events sent to its process
      and not yet acknowledged may hold in all: the next event waits while it would take
      them past this, unless nothing is in flight (so an event up to the host's
      `:max_frame` always goes). Its server keeps each of them until it is acked (to send
      it again after a crash), and its host holds them too. Default: the
      `:max_in_flight_bytes` application env, else 64 MiB.
    * `:high_water` - at this queue length the agent publishes an `overloaded` health
      event on `symbiont.health`; a `healthy` one follows once the queue is below half
      of it. The same goes for bytes, at 80% of `:max_queue_bytes`: `overloaded` when
      either crosses its mark, `healthy` once both are below half of theirs. Default:
      80% of `:max_queue`.
    * `:max_attempts` - how many times an event is tried before it goes to the dead
      letters: a handler that raises, runs past its `:handler_timeout`, or whose host
      dies while handling it, is one attempt. A retried event goes first in line (after
      those already in flight). Default: 3.
    * `:handler_timeout` - how long one delivery (event or tick) may run, in ms, or
      `:infinity`. Past it, the host cancels the handler (`symbiont.CancelledError` is
      raised in it; the event is nacked and retried). A handler that does not stop (it
      swallows the exception, or is stuck in native code) stops its agent's progress:
      when the agent has heard nothing from its host for the timeout plus 1 s while
      deliveries are in flight, the host process is restarted (for a Wasm agent, with
      the agents it shares the host with) and the event retried. Default: 30 000.
    * `:overflow` - what happens to an event that arrives when the queue is full (in
      events or in bytes): `:drop_oldest` (the oldest waiting events go to the dead
      letters, as many as it takes to make room) or `:reject` (the new one does; a
      publisher that asked for a checked publish gets `{:error, :overloaded}` instead,
      see `Symbiont.publish/3`, and one told `:ok` never sees its event dropped for
      room). Default: `:drop_oldest`.
    * `:durable` - journal the agent to disk (`Symbiont.Journal`): the events it accepted
      and has not finished, and the checkpoint of its state, so that stopping the node,
      or a crash of the whole BEAM, loses nothing it accepted. Default: `false` (the queue
      and the checkpoint live in the agent's BEAM process: a host crash loses nothing, a
      node crash loses them). See "Durable agents" below.
    * `:nodes` - the nodes the agent may run on, in order of preference (node names as
      atoms, like `:"a@host"`). Every node of the cluster runs the same manifest; each
      replica runs on one node, picked by `Symbiont.Manifest.pick_node/3`, and moves to a
      survivor when that node is lost. Default: `nil`, the node whose manifest lists it
      (each node that lists it runs its own replicas). See "Placement" below.
    * `:dedupe` - `true` drops an event whose id the agent has already accepted (see
      "Duplicates" below). Default: `false`.
    * `:max_topics` - how many distinct topics the agent may publish on, and subscribe
      to, each time its process starts (see "Topics" below). Default: the `:max_topics`
      application env, else 1 000.
    * `:max_start_failures` - after this many failed starts in a row the agent is
      quarantined (see "Agents that cannot start" below). Default: the
      `:max_start_failures` application env, else 5.

  ## Agents that cannot start

  An agent is checked before it runs (`Symbiont.Agent.Probe`): its module imported and
  its class constructed (a Wasm module compiled and instantiated), in a Python process of
  its own, never in the BEAM; the module's top-level code and the class's `__init__` run
  there (agents are trusted code), `on_start` does not. `Symbiont.spawn_agent/1`,
  `Symbiont.deploy/3`, `Symbiont.reload_manifest/0` and `Symbiont.Python.start/1` with
  `agent:` answer `{:error, %Symbiont.Error{reason: :cannot_start}}` at once for one that
  cannot start, its message naming the agent, its module and class and the exception (or
  the Wasm error), and start nothing.
  At node start the manifest's agents are checked before the node serves (see "Checked
  before it serves" in `Symbiont.Manifest`): a `:required` agent that cannot start stops
  the node from starting, any other one is quarantined at once; either way its traceback
  is logged, once.

  An agent can still fail to start later: its module changed or removed after the check,
  `on_start` raising, an import that kills its host process. A failed start makes it
  `failing` (a health event the first time, not one a retry: see "How it is doing" in
  `Symbiont.Observation`), counted in `start_failures`, and it is tried again after
  100 ms, 200 ms, 400 ms... (at most 5 s); the first failure of a row is logged, and so
  is a different one, not each retry. After `:max_start_failures` failed starts in a row the agent is
  quarantined: it stops trying, logs why with the traceback, once, and publishes a
  `quarantined` health event; events keep waiting in its bounded queue, and the conductor
  leaves it alone. `Symbiont.Agent.Server.release/1` (or the conductor's `release`) tries
  again, with `:max_start_failures` tries afresh. An agent that starts once is counted
  from zero again. A host process that dies while a Python agent in it is starting counts
  as a failed start of that agent, not as a crash (a Wasm agent shares its host: there
  the crash is not charged to its start, see "Blame" in `Symbiont.Manifest`).

  ## Topics

  What an agent publishes cannot grow the node without bound. Each replica may publish
  on at most `:max_topics` distinct topics per start of its process (its health
  reports are not publishes, and do not count), and subscribe to at most as many; a topic
  is at most 1 024 bytes. The host checks first, where the
  agent publishes: in Python, `self.publish` on one topic too many raises
  `symbiont.TopicLimitError` naming the limit (a handler may catch it; uncaught, the
  delivery fails like any exception: retried, then dead-lettered); for a Wasm module
  the `publish` import fails the call with an `abi` error. The agent logs the first
  refusal as an error and reports `degraded` on `symbiont.health`, once per start. A
  `publish` frame has no answer, so the owner checks again, unchecked: a publish that
  passed a host which does not keep to the limit is dropped and counted (`info/1`'s
  `refused_publishes`), and the first such refusal is logged and reported the same way.
  An agent that subscribes to more topics does not start (`agent_failed`, with the
  limit in the error).

  Topics that start with `symbiont.` are the node's own (`Symbiont.ControlPlane`): an
  agent may subscribe to them, not publish there. `self.publish` raises
  `symbiont.ReservedTopicError`, a Wasm module's `publish` fails its call with an `abi`
  error, and the owner drops (and counts in `refused_publishes`, and logs once) what a
  host sends there anyway. An agent reports its health with `self.health` (the Wasm
  `health` import); its owner publishes the report, naming the agent that sent it.

  ## Durable agents

  With `durable: true` the agent's owner journals every event as it accepts it and every
  ack with the agent's new state, under the data directory (`config :symbiont, data_dir:
  path`, default `.symbiont/data`). An event counts as accepted once its journal record is
  synced to disk, which the owner does once per burst of events (when its mailbox is
  empty, or after 64 records) and always before the event is sent to the host. When the
  agent starts again (after its node stopped or crashed, or on another node that took it
  over), it resumes from the last journaled checkpoint and gets the events it had not
  finished again, in the order they were accepted: nothing accepted is lost, and the
  state counts each acked event once. `Symbiont.Agent.Server.info/1` shows the journal
  (`:journal`: `accepted`, `pending`, `bytes`...). Events still on their way (published,
  not yet in the owner's mailbox) are not accepted; an event handled again after a crash
  may publish again (at least once). The file format, the accept point and the
  compaction rule are in `Symbiont.Journal` and `docs/DURABILITY.md`.

  When the journal cannot be written (a full disk, an I/O error, the file removed), the
  agent does not crash: it accepts nothing until it can (checked publishes on its node get
  `{:error, :journal_unavailable}`; other events go to the dead letters with the reason
  `"journal_unavailable"`), publishes a `failing` health event whose reason names the
  file and the error, keeps handling the events it had accepted, tries again after 1 s,
  2 s, 4 s and then every 5 s, and accepts again once the journal is written (`healthy`).
  A journal that cannot be opened (corrupt in its middle, unreadable) keeps the agent out
  of its host, `failing` with the file and the offset, until it can be opened.

  ## Placement

  An agent with `:nodes` runs once per replica in the whole cluster, on the nodes listed.
  Every node runs the same manifest, and the rule is deterministic, so no vote is needed:
  a replica that runs nowhere is started by the first live node of the list (rotated by
  the replica's number, so that replicas spread), and a running replica stays where it is
  (it is registered cluster-wide with `:global`, which refuses a second copy). When a node
  is lost, the survivors' manifests start its replicas at once on the next live node of
  their lists, and a durable agent resumes there from its journal (which needs the data
  directory on storage the nodes share). A node that comes back does not take its
  replicas back: they stay where they run until that node is lost in turn.

  ## Duplicates

  Delivery is at least once: an agent whose host dies after its handler published but
  before the ack handles the event again, from the checkpoint before it, and publishes
  the same events again. Each carries a deterministic id, `{agent_id, incarnation, seq,
  n}` (`t:Symbiont.Event.id/0`, PROTOCOL.md §8.1): the seq of the delivery being handled
  (the number the agent gave the event as it accepted it, which it keeps when it is
  delivered again, and which a durable agent keeps in its journal with the incarnation)
  and the index of the publish within that handling. So the copy has the id of the
  first. A timer's handler is a delivery like an event; publishes outside a handler (in
  `on_start`, `on_stop`, or from a thread) have the seq of the last delivery handled (on
  start, the one the checkpoint matches) and n counting -1, -2, ... since then, so that
  `on_start` publishing the same after a restart from the same checkpoint gives the same
  ids. Ids are as deterministic as the agent's code: a handler that publishes other
  things, or in another order, when it runs again gives them the ids of the first run's.

  An agent with `dedupe: true` remembers the ids it has accepted into its queue and drops
  an event whose id it has seen, counting it (`duplicates` in
  `Symbiont.Agent.Server.info/1` and `metrics/1`), so that a counter in its state stays
  exact through its publishers' crashes. The memory is kept by its server on the BEAM,
  which outlives its host's crashes (a durable agent journals it with its checkpoint),
  and is bounded: per publisher, the highest seq seen and a window of the last 4096 seqs
  up to it (a bit per seq, 512 bytes in all, and two integers more for a seq whose
  handler published more than once); an id further behind is a copy of an old event and
  is dropped. That is enough because an agent redelivers in order: an event handled again
  was in flight, or retried first in line behind those in flight, so its seq trails the
  publisher's highest by at most `:max_attempts` x `:max_in_flight` of the publisher (3 x
  100 by default). At most 1024 publishers are remembered (the one heard from longest
  ago goes first), and a publisher whose server started afresh (a new incarnation) is
  remembered afresh. A seq a window or more above the highest starts the window afresh
  there, whatever its size (a seq from Elixir's `:id` may be any integer). A Python
  agent cannot move it so: its server drops a publish whose seq is above every seq it
  delivered (PROTOCOL.md §8.1).

  Each replica of an agent remembers what it accepted itself: with `:replicas` above 1, a
  copy that the queue group hands to another replica than the first is not recognised.
  Events without an id (published from Elixir without `:id`, see `Symbiont.publish/3`)
  are never dropped.

  ## Dead letters

  An event the agent cannot handle is published on `symbiont.dead_letter` as the map
  `%{"agent", "topic", "payload" (the event's msgpack bytes), "reason", "attempts",
  "error"}`: `"reason"` is `"handler_failed"` (the last Python `"error"`, a cancelled
  handler's too), `"crashed"` (its host died while handling it, `max_attempts` times; the
  error has the exit and the last output lines), `"timeout"` (its host was restarted
  because the handler did not stop after its `:handler_timeout`), `"overloaded"`
  (`"attempts" => 0`, `"error" => nil`), `"too_large"` (`"attempts" => 0`: the event is
  larger than the agent's `:max_queue_bytes`, or its delivery than its host's
  `:max_frame`; the error says which), `"retired"` (still waiting when the agent was
  retired for good), `"poison"` (the conductor took it out after it crashed its host,
  see `Symbiont.Conductor`) or `"journal_unavailable"` (a durable agent refused it: its
  journal could not be written; `"attempts" => 0`, the error names the file).
  """

  @type spec :: %{
          name: String.t(),
          module: String.t(),
          class: String.t(),
          wasm: String.t() | nil,
          config: map,
          replicas: pos_integer,
          max_queue: pos_integer,
          max_queue_bytes: pos_integer,
          max_in_flight: pos_integer,
          max_in_flight_bytes: pos_integer,
          high_water: pos_integer,
          max_attempts: pos_integer,
          handler_timeout: pos_integer | :infinity,
          overflow: :drop_oldest | :reject,
          min_replicas: pos_integer,
          max_replicas: pos_integer,
          required: boolean,
          durable: boolean,
          nodes: [node] | nil,
          dedupe: boolean,
          max_topics: pos_integer,
          max_start_failures: pos_integer
        }

  alias Symbiont.Agent.Spec

  @doc """
  Validates an agent spec given as a keyword list or map; `nil` is no agent. See
  `Symbiont.Agent.Spec.validate_spec/1`.
  """
  @spec validate_spec(nil | keyword | map) :: {:ok, spec | nil} | {:error, Symbiont.Error.t()}
  defdelegate validate_spec(spec), to: Spec

  @doc """
  The spec of a new version of a Wasm agent: `spec` running the module at `path`, with
  the same topics, limits and config. See `Symbiont.Agent.Spec.with_wasm/2`.
  """
  @spec with_wasm(spec, String.t()) :: {:ok, spec} | {:error, Symbiont.Error.t()}
  defdelegate with_wasm(spec, path), to: Spec

  @doc """
  Whether the Wasm binary at `path` is a component (the Component Model's format) rather
  than a core module. See `Symbiont.Agent.Spec.component?/1`.
  """
  @spec component?(Path.t()) :: boolean
  defdelegate component?(path), to: Spec

  @doc """
  The `:max_topics` of `spec` (see "Topics"); a spec validated before the key existed
  gets the default.
  """
  @spec max_topics(map) :: pos_integer
  defdelegate max_topics(spec), to: Spec.Limits

  @doc """
  The `:max_start_failures` of `spec` (see "Agents that cannot start"); a spec validated
  before the key existed gets the default.
  """
  @spec max_start_failures(map) :: pos_integer
  defdelegate max_start_failures(spec), to: Spec.Limits
end

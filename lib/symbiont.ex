defmodule Symbiont do
  @moduledoc """
  A living system of agents: the BEAM supervises, Python thinks, WebAssembly sandboxes.

  Agents are Python classes or Wasm modules, each run in a host OS process owned by a
  `Symbiont.Host`; they talk through topics of `Symbiont.Mesh`, across every connected
  node. This module is the public API and the helpers for a live iex session
  (`make shell`): it owns their documentation; what the operator changes by hand is
  implemented in `Symbiont.Operator`, the helpers that read and show the system in
  `Symbiont.Inspection`.

  ## Supervision tree

      Symbiont.Supervisor (rest_for_one)
      │   the core:
      ├── Symbiont.Telemetry         owner of the telemetry handler table
      ├── Symbiont.Host.Registry     unique names of hosts
      ├── Symbiont.Agent.Registry    unique ids of agents, with their name and role
      ├── Symbiont.Instances         which Symbiont.Instance runs which agent name (the
      │                              instances themselves are in your application's tree)
      ├── Symbiont.Observation       what each agent is and how it is doing: the one view
      │                              every screen and the conductor read; and the
      │                              operator's pins (Symbiont.Pins)
      ├── Symbiont.Mesh              the mesh: a :pg scope, the group registry, the
      │                              adapter (Registry + :pg forwarder) and its server
      ├── Symbiont.TaskSupervisor    calls from Python into the BEAM
      │   then what needs it:
      ├── Symbiont.Stores (one_for_one)
      │   ├── Symbiont.Conductor.Audit  the trail of remediations (outlives the conductor)
      │   ├── Symbiont.Health.History   recent health events, for `health/0` and `agent/1`
      │   └── Symbiont.Host.Standby     warm standby host processes, so that a crashed host
      │                                 serves again in milliseconds (`:standby_hosts`)
      ├── Symbiont.Runtime (one_for_all, max_restarts: 0)
      │   ├── Symbiont.Hosts         DynamicSupervisor of Symbiont.Host
      │   │     └── Symbiont.Host ── Port ── python -m symbiont.host
      │   └── Symbiont.Agents        DynamicSupervisor of Symbiont.Agent.Server, each
      │                              attached to a slot of a host
      └── Symbiont.Control (one_for_one)
          ├── Symbiont.Deploy        canaries, promotions and rollbacks of Wasm agents
          ├── Symbiont.Manifest      the desired state; the reconciler that repairs drift
          ├── Symbiont.Conductor     observe -> decide (Python policy) -> act, every tick
          └── Symbiont.StatusPage    the live status page (when configured): its feed
                                     and an :inets httpd on 127.0.0.1

  The root is `:rest_for_one`: each child needs only those before it, so a crash restarts
  the crashed child and those after it, never one before it.

    * The core is the root's own: every later process registers in its registries,
      subscribes on its mesh or has its row in its observation table, so a crash of a
      core process restarts it, the core after it and all three groups, the groups
      stopped before the core process starts again. (A core supervisor of its own could
      restart the groups only by giving up; it would stop the registries and the mesh
      first, killing the processes registered there, which their groups would restart
      against a core that is down.)
    * `Symbiont.Stores` (`:one_for_one`): what outlives the runtime and control. No crash
      of the manifest, a deploy, the conductor, the page or a host supervisor loses the
      audit trail the conductor resumes its cooldowns from, or the health history; and
      the hosts restarted with the runtime take warm standbys.
    * `Symbiont.Runtime` (`:one_for_all`, `max_restarts: 0`): a crash of the hosts' or
      the agents' supervisor restarts both and, after them, control, whose new manifest
      starts the agents again. A crash of one host or one agent is its DynamicSupervisor's
      alone.
    * `Symbiont.Control` (`:one_for_one`): a crash of the deploys, the manifest, the
      conductor or the page restarts that one alone; the conductor's does not restart the
      manifest.

  ## In iex

  One convention: the helpers that show something print it, lined up, and return `:ok`
  (or a count): `status/0`, `health/0`, `peek/2`. The others return data: `agents/0`,
  `agent/1`, `hosts/0`, `remediations/1`, and `topology/0`, whose struct prints as a
  table. Those that change something return `:ok`, `{:ok, _}` or `{:error,
  %Symbiont.Error{}}` (its `reason` an atom to match on, its message naming what was
  wrong and what is allowed), and publish what they did on `symbiont.remediation` as the
  `"operator"`.

      iex> Symbiont.status()                         # one screen: nodes, hosts, agents, health, remediations
      iex> Symbiont.agent("billing")                 # state, queue, in-flight, version, health history
      iex> Symbiont.health()
      iex> Symbiont.topology()
      iex> Symbiont.peek("orders.created", ms: 10_000)
      iex> Symbiont.publish("orders.created", %{"id" => 7, "amount" => 12.5})
      iex> Symbiont.call("billing", "math.pow", [2, 10])
      iex> Symbiont.restart("billing")
      iex> Symbiont.scale("billing", 3)              # pinned: the conductor leaves it at 3
      iex> Symbiont.unpin("billing")
      iex> Symbiont.quarantine("billing", "looking into it")
      iex> Symbiont.release("billing")
      iex> Symbiont.deploy("pricing", "priv/wasm/pricing_v2.wasm")
      iex> Symbiont.rollback("pricing")
      iex> Symbiont.spawn_agent(name: "tenant-42", python: "shop:Tenant")
      iex> Symbiont.retire("tenant-42")
      iex> Symbiont.remediations()
  """

  alias Symbiont.{Instance, Observation}

  @doc """
  Symbiont as a child of your application's supervision tree:
  `{Symbiont, name: MyApp.Symbiont, agents: [...], conductor: [...], status_page: false}`.
  See `Symbiont.Instance`.
  """
  @spec child_spec(keyword) :: Supervisor.child_spec()
  defdelegate child_spec(opts), to: Instance

  ## What an agent is and how it is doing: every helper here reads Symbiont.Observation.

  @doc """
  Prints one screen about the running system and returns `:ok`: the nodes, then every
  replica of every agent on this node (`Symbiont.Observation`: its role, host, status,
  health, queue (and its payload bytes when it holds any), in-flight, handled, failed,
  crashes, restarts, p99 handling latency, version) and the hosts that run no agent, the
  pins of the operator (`Symbiont.Pins`), then the last remediations applied (the
  conductor's refused proposals are in `remediations/1`). Health, crashes and restarts
  mean what `Symbiont.Observation` says: the status page and the conductor read the
  same.

      iex> Symbiont.status()
      Symbiont on symbiont@localhost: 1 node(s), 3 host(s), 2 agent(s) (1 degraded, 1 healthy)
      nodes: symbiont@localhost

      AGENT    ROLE    HOST     STATUS  HEALTH    QUEUE  IN-FLIGHT  HANDLED  FAILED  CRASHES  RESTARTS  P99    VERSION
      billing  stable  billing  ready   degraded  0      0          41       3       0        1         2.3ms  demo_agents:Billing
      ...

  While the application is still starting (a node answers `bin/symbiont rpc` before its
  manifest has started its agents), it raises instead of printing a screen without
  them. To wait until the node serves, use `await_ready/1`.
  """
  @spec status() :: :ok
  defdelegate status(), to: Symbiont.Inspection

  @doc """
  Waits until this node serves, at most `timeout` ms: the application has started and
  every replica of every agent on it is `ready` (its host up, subscribed to its topics).
  Until then an event published to an agent's topic may find no subscriber yet, and a
  publish with no subscriber goes nowhere (the mesh is publish/subscribe).

  Returns `:ok`, or `{:error, %Symbiont.Error{reason: :unavailable}}` naming the agents
  not ready and their status (`details.agents`: their ids), at once for a quarantined agent (it starts only when released) and after `timeout` for the
  others. A script waits for a node it just started with
  `until bin/symbiont rpc ':ok = Symbiont.await_ready()'; do sleep 1; done` (the rpc
  fails while the node is not up yet).

      Symbiont.await_ready(5_000)
      #=> {:error, %Symbiont.Error{reason: :unavailable, message: "not ready: relay is detached", ...}}
  """
  @spec await_ready(non_neg_integer) :: :ok | {:error, Symbiont.Error.t()}
  defdelegate await_ready(timeout \\ 30_000), to: Symbiont.Inspection

  @doc """
  Information about every host, sorted by name: status, OS pid, uptime, crashes (its
  process's: every time it died, whoever it was charged to), the last crash and its
  output, its `:utilisation` (the share of its last heartbeats its agents' handlers
  took, `nil` before one: `Symbiont.Host.Usage`), and the agents it runs (their
  `Symbiont.Observation` view).

      iex> Enum.all?(Symbiont.hosts(), &Map.has_key?(&1, :os_pid))
      true
  """
  @spec hosts() :: [map]
  defdelegate hosts(), to: Symbiont.Inspection

  @doc """
  Every replica of every agent on this node, a quarantined one too, sorted by host, then
  id: its `Symbiont.Observation` view (role, status, health, queue, in-flight, handled,
  failed, crashes, restarts, failure rate, version...) and its host's OS pid
  (`:os_pid`). Its decoded state is `agent/1`'s.

      iex> Enum.all?(Symbiont.agents(), &Map.has_key?(&1, :queue))
      true
  """
  @spec agents() :: [map]
  def agents, do: agents(hosts())

  @doc false
  # agents/0 with the hosts already at hand (hosts/0). From the observation, not the
  # hosts' slots: a quarantined agent has left its host's slot.
  @spec agents([map]) :: [map]
  defdelegate agents(hosts), to: Symbiont.Inspection

  @doc """
  The audit trail of remediations, newest first (`Symbiont.Conductor.Audit`): what was
  done (restart, scale, quarantine, rollback...), to which agent, by whom (supervisor,
  deploy, conductor, operator), why, and the evidence behind the decision. Actions the
  conductor refused or failed to apply are there too, with why (`"result"`).

      iex> Symbiont.Remediation.publish("restart", "doc-audit", "by hand", by: "operator")
      :ok
      iex> Enum.find(Symbiont.remediations(), &(&1["agent"] == "doc-audit"))["by"]
      "operator"
  """
  @spec remediations(pos_integer) :: [map]
  def remediations(n \\ 50), do: Symbiont.Conductor.Audit.entries(n)

  @doc """
  Adds an agent to the manifest and starts it (see `Symbiont.Manifest.spawn_agent/2`);
  the spec is validated like a config entry, and the agent is checked before it runs
  (`Symbiont.Agent.Probe`: its module imported and class constructed, or its Wasm module
  instantiated, in a Python process of their own): one that cannot start is refused at
  once, with why, and nothing starts. Option `in: MyApp.Symbiont` adds it to that
  `Symbiont.Instance` (the node's own manifest otherwise).

      iex> {:error, error} = Symbiont.spawn_agent(name: "doc agent", python: "m:A")
      iex> {error.reason, error.message}
      {:invalid, ~s(expected agent :name to be 1 to 64 letters, digits, "_", "-" or ".", got: "doc agent")}
      iex> {:error, error} = Symbiont.spawn_agent(name: "doc-ghost", python: "nosuch:Thing")
      iex> {error.reason, error.message}
      {:cannot_start, ~s(agent "doc-ghost": nosuch:Thing cannot start: ModuleNotFoundError: No module named 'nosuch')}
  """
  @spec spawn_agent(keyword | map, keyword) :: {:ok, String.t()} | {:error, Symbiont.Error.t()}
  defdelegate spawn_agent(spec, opts \\ []), to: Symbiont.Operator

  @doc """
  Runs `n` replicas of agent `name` (a queue group: each event reaches one of them),
  starting or retiring replicas to match; retired replicas hand their waiting events to
  the first one. Audited as the `"operator"`'s `scale`.

  The count is **pinned** (`Symbiont.Pins`): the conductor scales or retires the agent
  no more, whatever its queue or idleness, until `unpin/1` or the hold expires (option
  `:hold_ms`, default `pin_hold_ms` of `config :symbiont, conductor: [...]`, ten
  minutes; `:infinity` holds until `unpin/1`). Once it may act again, what it counts as
  evidence starts from then, not from before the scale.

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.scale("doc-nobody", 2)
      iex> message =~ ~s(agent "doc-nobody" is not in the manifest (its agents: [)
      true
  """
  @spec scale(String.t(), pos_integer, keyword) :: :ok | {:error, Symbiont.Error.t()}
  defdelegate scale(name, n, opts \\ []), to: Symbiont.Operator

  @doc """
  Quarantines agent `name` (every stable replica, or the one replica whose id it is):
  it leaves its host, its events wait in its queue (`Symbiont.Agent.Server.quarantine/2`).
  Audited as the `"operator"`'s, and **pinned**: the conductor does not release it (nor
  quarantine it again) until `unpin/1` or the hold expires (option `:hold_ms`, as for
  `scale/3`).

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.quarantine("doc-nobody", "why")
      iex> message =~ ~s(no agent "doc-nobody" runs on this node)
      true
  """
  @spec quarantine(String.t(), String.t(), keyword) :: :ok | {:error, Symbiont.Error.t()}
  defdelegate quarantine(name, reason \\ "quarantined by hand", opts \\ []), to: Symbiont.Operator

  @doc """
  Releases agent `name` from its quarantine (every stable replica, or the one whose id it
  is): it starts again in its host, from its last acked state. Audited as the
  `"operator"`'s, and **pinned**: the conductor does not quarantine it again until
  `unpin/1` or the hold expires (option `:hold_ms`, as for `scale/3`).

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.release("doc-nobody")
      iex> message =~ ~s(no agent "doc-nobody" runs on this node)
      true
  """
  @spec release(String.t(), keyword) :: :ok | {:error, Symbiont.Error.t()}
  defdelegate release(name, opts \\ []), to: Symbiont.Operator

  @doc """
  Lifts the pins of agent `name` (`Symbiont.Pins`: what `scale/3`, `quarantine/3`,
  `release/2` and `rollback/1` set by hand): the conductor may act on it again, on
  evidence counted from now. Audited as the `"operator"`'s `unpin`. Returns the fields
  that were pinned.

      iex> {:error, error} = Symbiont.unpin("doc-nobody")
      iex> {error.reason, error.message}
      {:not_found, ~s(agent "doc-nobody" has no pin)}
  """
  @spec unpin(String.t()) :: {:ok, [String.t()]} | {:error, Symbiont.Error.t()}
  defdelegate unpin(name), to: Symbiont.Operator

  @doc """
  Removes agent `name` from the manifest: its replicas stop, the events still waiting for
  it go to the dead letters (reason `"retired"`), a `retired` health event is published,
  and its pins (`Symbiont.Pins`) are lifted.

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.retire("doc-nobody")
      iex> message =~ ~s(agent "doc-nobody" is not in the manifest (its agents: [)
      true
  """
  @spec retire(String.t()) :: :ok | {:error, Symbiont.Error.t()}
  defdelegate retire(name), to: Symbiont.Operator

  @doc """
  Reads `config/config.exs` again and applies what changed in its `:agents`, live (see
  `Symbiont.Manifest.reload/2`): returns `{:ok, %{started:, retired:, rescaled:,
  upgraded:}}`, or `{:error, %Symbiont.Error{}}` and changes nothing when the new config is bad or
  a new or changed agent cannot start.
  """
  @spec reload_manifest() :: {:ok, map} | {:error, Symbiont.Error.t()}
  def reload_manifest, do: Symbiont.Manifest.reload()

  @doc """
  Deploys a new version of a Wasm agent: a canary runs `wasm_path` beside the old
  version and is promoted, or rolled back, by itself (see `Symbiont.Deploy` for the
  rules and the options). Each step is an event on `symbiont.remediation`. A module that
  cannot start (not Wasm, exports that do not fit the ABI, a trap in `symbiont_init`) is
  `{:error, %Symbiont.Error{reason: :cannot_start}}` at once, and no canary starts.

      {:ok, %{canary: "pricing#canary"}} = Symbiont.deploy("pricing", "priv/wasm/pricing_v2.wasm")
  """
  @spec deploy(String.t(), String.t(), keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def deploy(agent, wasm_path, opts \\ []), do: Symbiont.Deploy.deploy(agent, wasm_path, opts)

  @doc """
  Rolls a Wasm agent back: its running canary, or else its last promotion. Audited as
  the `"operator"`'s `rollback`, and the version it returns to is **pinned**: the
  conductor neither rolls it back further nor deploys it until `unpin/1` or the hold
  expires (option `:hold_ms`, as for `scale/3`).

      iex> {:error, error} = Symbiont.rollback("doc-nobody")
      iex> {error.reason, error.message}
      {:not_found, ~s(agent "doc-nobody" has no deploy to roll back)}
  """
  @spec rollback(String.t(), keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  defdelegate rollback(agent, opts \\ []), to: Symbiont.Operator

  @doc """
  Publishes `value` on `topic`: it is encoded once as msgpack and delivered to every
  subscriber on every node, agents included (one replica of each agent).

  Options:

    * `:checked` - `true` refuses the publish, sending nothing, with
      `{:error, :overloaded}` when an agent on this node that rejects on overflow has a
      full queue (in events or in bytes), with `{:error, :too_large}` when the payload is
      larger than an agent's `:max_queue_bytes`, and with
      `{:error, :journal_unavailable}` when a durable agent on this node cannot write its
      journal (a full disk): see `Symbiont.Mesh.publish/3`.
      Default: `false`.
    * `:from` - the publisher's name in `topology/0`. Default: `"elixir"`.
    * `:id` - the event's id, `{publisher, incarnation, seq, n}` (`t:Symbiont.Event.id/0`),
      for a publisher that may send the same event twice (an importer that resumes from
      its last position): `dedupe: true` agents drop a second event with the same id.
      Default: none.

  Returns `{:error, {:unencodable, term}}` when `value` has no msgpack form,
  `{:error, %Symbiont.Error{reason: :invalid}}` for an `:id` of the wrong shape, and
  `{:error, %Symbiont.Error{reason: :refused}}` for a topic that starts with
  `symbiont.`: those are Symbiont's own, published only by `Symbiont.Health.publish/5`,
  `Symbiont.Remediation.publish/4` and agents' dead letters (`Symbiont.ControlPlane`).

      iex> Symbiont.publish("doc.nobody.listens", %{"hello" => "world"})
      :ok
      iex> {:error, %Symbiont.Error{reason: :refused, message: message}} =
      ...>   Symbiont.publish("symbiont.health", %{"kind" => "failing"})
      iex> message =~ ~s(topic "symbiont.health" is reserved)
      true
  """
  @spec publish(String.t(), term, keyword) :: :ok | {:error, term}
  def publish(topic, value, opts \\ []) when is_binary(topic) and is_list(opts) do
    id = Keyword.get(opts, :id)

    with :ok <- unreserved(topic),
         :ok <- Symbiont.Event.validate_id(id),
         {:ok, event} <- Symbiont.Event.new(topic, value, Keyword.get(opts, :from)),
         do: Symbiont.Mesh.publish(Symbiont.Mesh, %{event | id: id}, opts)
  end

  defp unreserved(topic) do
    if Symbiont.ControlPlane.reserved?(topic),
      do:
        {:error, Symbiont.Error.new(:refused, Symbiont.ControlPlane.refusal(topic), topic: topic)},
      else: :ok
  end

  @doc """
  Subscribes the calling process to `topic` on the node's mesh (`Symbiont.Mesh`): it then
  receives a `%Symbiont.Event{}` for each value published there. Options as in
  `Symbiont.Mesh.subscribe/3` (`:group`, `:metadata`).

      iex> Symbiont.subscribe("doc.subscribe")
      :ok
      iex> Symbiont.publish("doc.subscribe", [1, 2])
      :ok
      iex> receive do: (%Symbiont.Event{} = e -> Symbiont.Event.decode(e))
      {:ok, [1, 2]}
  """
  @spec subscribe(String.t(), keyword) :: :ok | {:error, term}
  def subscribe(topic, opts \\ []) when is_binary(topic) and is_list(opts),
    do: Symbiont.Mesh.subscribe(Symbiont.Mesh, topic, opts)

  @doc "Unsubscribes the calling process from `topic` on the node's mesh."
  @spec unsubscribe(String.t()) :: :ok
  def unsubscribe(topic) when is_binary(topic),
    do: Symbiont.Mesh.unsubscribe(Symbiont.Mesh, topic)

  @doc """
  Who publishes what to whom, across every node of the mesh: publishers → topics →
  subscribers, with queue groups, nodes and message counts. Prints as a table in iex;
  `Symbiont.Topology.to_mermaid/1`, `to_dot/1` and `write/2` export it.

      iex> %Symbiont.Topology{} = Symbiont.topology()
  """
  @spec topology() :: Symbiont.Topology.t()
  defdelegate topology(), to: Symbiont.Inspection

  @doc """
  One agent, by name (or one replica, by id: `"billing#2"`, `"pricing#canary"`): its
  `Symbiont.Observation` view (health and its reason, crashes, restarts, failure rate,
  queue, in-flight, handled, failed: over its stable replicas; `replicas`, each one's
  view; `canary`; `pins`), its first replica's decoded state (a Wasm agent's too) and
  details (`Symbiont.Agent.Server.info/1`), version (`"module:Class"` or
  `"wasm:path"`), p50/p99 handling latency, its host's OS pid, and its recent health
  events (`health_history`, newest first). An unknown name is an error that lists the
  running agents.

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.agent("doc-nobody")
      iex> message =~ ~s(no agent "doc-nobody" runs on this node; agents: [)
      true
  """
  @spec agent(String.t()) :: {:ok, map} | {:error, Symbiont.Error.t()}
  defdelegate agent(name), to: Symbiont.Inspection

  @doc """
  Prints the health of every replica of every agent (`Symbiont.Observation`: its health,
  since when, and why) and the recent health events of the node, and returns `:ok`.

      iex> Symbiont.health()
      :ok
  """
  @spec health() :: :ok
  def health do
    IO.puts(Symbiont.Console.health(Observation.replicas(), Symbiont.Health.History.recent(10)))
  end

  @doc """
  Prints the events published on `topic` as they go by, decoded, one a line, then stops
  by itself and unsubscribes; returns how many it printed. Options: `:ms`, how long to
  watch (default 5000), and `:count`, stop after that many.

      iex> Symbiont.peek("doc.peek.nobody", ms: 10)
      0
  """
  @spec peek(String.t(), keyword) :: non_neg_integer
  defdelegate peek(topic, opts \\ []), to: Symbiont.Inspection

  @doc """
  Restarts agent `name` on request, every replica of it (or only the replica given by
  its id, `"billing#2"`), and publishes the `restart` remediation, by `"operator"`.

  A Python agent's host process is killed and started again (`Symbiont.Host.restart/2`),
  and the un-acked events are delivered again to the new process. A Wasm agent shares
  its host with other agents, which are left alone: it starts again in a new slot of its
  host, from its last acked state, keeping its queue (`Symbiont.Agent.Server.restart/2`),
  as the conductor's `restart` does.

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} = Symbiont.restart("doc-nobody")
      iex> message =~ ~s(no agent "doc-nobody" runs on this node)
      true
  """
  @spec restart(String.t()) :: :ok | {:error, Symbiont.Error.t()}
  defdelegate restart(name), to: Symbiont.Operator

  @doc """
  Calls a Python function in a running host, ErlPort-style (see `Symbiont.Python.call/5`),
  and returns `{:ok, result}`. `host` is a host's name or an agent's (a Python agent's
  host is named after the agent; a Wasm agent's is the host it shares, so the call runs
  in that Python process, beside the sandbox). `function` is the dotted name
  `"module.function"` (`"os.path.join"`), imported by the host if it has to be, and
  `args` its arguments. A Python exception comes back as
  `{:error, %Symbiont.Python.Error{}}`, a call that takes over 5 s as
  `{:error, :timeout}` (and is cancelled in Python).

      iex> {:error, %Symbiont.Error{reason: :not_found, message: message}} =
      ...>   Symbiont.call("doc-nobody", "math.pow", [2, 10])
      iex> message =~ ~s(no host or agent named "doc-nobody" runs on this node; hosts: [)
      true
      iex> {:error, error} = Symbiont.call("doc-nobody", "pow", [2, 10])
      iex> {error.reason, error.message}
      {:invalid, ~s(expected function to be "module.function", got: "pow")}
  """
  @spec call(String.t(), String.t(), list) ::
          {:ok, term} | {:error, Symbiont.Error.t() | Symbiont.Python.Error.t() | atom}
  defdelegate call(host, function, args \\ []), to: Symbiont.Inspection
end

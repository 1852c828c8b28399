defmodule Symbiont.Conductor do
  @moduledoc """
  The integration agent: on every tick it observes the system, asks a Python
  policy what to do, and applies the answer within guardrails. OTP supervision is the
  floor (hosts restart by themselves); the conductor is what makes the system heal and
  evolve by itself.

  This module owns the options, the process and its tick, and the policy host (decide);
  the observation is `Symbiont.Conductor.Observe`, the guardrails (pure) are
  `Symbiont.Conductor.Guard`, and applying an action is `Symbiont.Conductor.Act`.

  ## The loop

  * **Observe** (every `:tick_ms`, default 1000): a snapshot of every agent in scope,
    read from `Symbiont.Observation` (the view `Symbiont.status/0` and the status page
    read too; no call to any agent), over its stable replicas: queue, in flight,
    handled, failed, crashes and restarts (a crash is a death of the agent's host
    charged to it, its code running: see "Blame" in `Symbiont.Manifest`; an upgrade, a
    restart on purpose or a neighbour's crash is a restart, never a crash) and their
    change since the last tick (since the conductor started, at its first tick), its
    failure rate, p99 latency, idleness, quarantine, the suspect delivery that failed
    before, its health and why (the worst of its stable replicas'; a canary's is its
    own, under `"canary"`, and the deploy's to judge), its failed starts in a row
    (`"start_failures"`, which its own start-failure rule answers, see "Agents that
    cannot start" in `Symbiont.Agent`), the operator's pins (`Symbiont.Pins`: `"pins"`,
    by field), how long ago a promoted version it can roll back to was promoted, how
  long ago it was last remedied (rolled back, quarantined or released, by the
  conductor or by the operator: its crashes before that remedy are answered, and are
  not evidence again; a dead letter takes one delivery away, not a crash loop), its
  `"signals"` (what the BEAM measured for the analytics, `Symbiont.Signals`: latency
  and failures against its version's baseline, crashes over a window of uptime, queue
  rates, its host's memory; docs/ANALYTICS.md), its `"ladder"` (the rung it is at on
  each pattern's ladder of remedies, rebuilt from the audit trail when the conductor
  starts: see "Escalation" in `python/symbiont/conductor.py`), the topology as
  `from -> topic -> to` edges, the topics a template matches, the templates, the shared
  hosts with their utilisation and each agent's share of their time (`"hosts"`, see
  `Symbiont.Host.Usage.snapshot/1`), the health events since the last tick and the
  recent audit trail. Each agent's map has at most 32 keys (a larger map costs
    ten times as much to build, 10,000 a tick): what a policy can derive (`"deployed"`)
    is added on the Python side (`symbiont.conductor.decide`).
    The conductor (and the process that builds half of a large snapshot beside it) runs
    at high priority: the loop that heals an overloaded node must not wait its turn
    behind the overload. At 10,000 busy Wasm agents on two cores a tick took 5-7 s at
    normal priority, 1.3-1.5 s so; on a quiet node it takes some 30 ms a second
    (bench/heal), which is all the priority costs the agents.
  * **Decide**: the snapshot goes to the policy, a Python class running in a host of its
    own (`"conductor"`), encoded by the conductor itself (`Symbiont.Python.call/5`
    encodes in the caller): `symbiont.conductor:DefaultPolicy` unless `:policy` names
    another `"module:Class"`. It returns actions with reasons: `restart`, `scale`,
    `quarantine`, `release`, `rollback`, `deploy`, `retire`, `spawn`, `reroute`,
    `dead_letter` (see `python/symbiont/conductor.py`).
  * **Act**: each action is checked against the guardrails, applied, published on
    `symbiont.remediation` (`by: "conductor"`, with its evidence) and emitted as the
    telemetry event `[:symbiont, :conductor, :action]`; one that is refused or fails is
    recorded in the audit trail with why (`Symbiont.remediations/0`) and logged, once:
    the same action refused again for the same reason (a cooldown, a pin, tick after
    tick) is neither recorded nor logged again while it recurs (less than a minute
    apart) and nothing was done on that agent.

  ## Evolution: agents from templates

  Templates are agent specs the policy may `spawn` from, with a topic pattern, `:match`
  (`*` is one dot-separated segment, see `Symbiont.Conductor.Template`):

      config :symbiont,
        templates: [
          tenant: [match: "tenant.*.orders", python: "shop:Tenant", config: %{"out" => "billed"}]
        ]

  The default policy spawns one agent per topic that the pattern matches, that was
  published to since the last tick and that nobody serves: `"tenant-acme"` for
  `tenant.acme.orders`, the template's spec with `required: false` and the config
  `%{"topic" => "tenant.acme.orders", "tenant" => "acme"}` merged in (the agent subscribes
  to its topic from its config). It joins the manifest like `Symbiont.spawn_agent/1`, and
  the idle rule retires it again once nothing arrives for `idle_ms`. Events published
  before it serves found no subscriber and are not delivered to it.

  ## Guardrails

    * `:cooldown_ms` - at most one action per agent in this time, counted from when the
      last one was done. Default: 5000.
    * `:max_actions_per_minute` - over all agents. Default: 30.
    * a `scale` stays within the agent's `:min_replicas..:max_replicas` and applies to
      agents of the manifest only; a scale in the other direction than the agent's last
      one waits twice the cooldown (hysteresis against flapping);
    * the last replica of a `required` agent is never retired;
    * what the operator pinned holds (`Symbiont.Pins`): no `scale` or `retire` of an
      agent whose replica count is pinned, no `quarantine` or `release` of one whose
      quarantine is, no `rollback` or `deploy` of one whose version is, and no `reroute`
      of an agent with any pin;
    * a `reroute` (`"id"`: the replica, optional for an agent of one) moves a stable,
      unquarantined Wasm replica that shares its host to a host of its own
      (`Symbiont.Placement.reroute/2`; where from and where to are audited with it, as
      `"from"` and `"to"`); anything else is refused with why.

  ## Never a single point of failure

  The agents do not depend on the conductor: if the policy host crashes, hangs (the call
  times out after `:decide_timeout_ms`, default 5000, and is cancelled) or answers
  garbage, the tick is recorded as failed (`info/1`) and the next one tries again, while
  OTP keeps restarting hosts. The conductor itself is supervised; the audit trail lives
  in `Symbiont.Conductor.Audit`, so a restarted conductor reads its cooldowns back from
  it and carries on.

  ## Options

  `:name` (default `Symbiont.Conductor`), `:tick_ms`, `:policy`, `:policy_options` (a map
  of keyword arguments for the policy class), `:policy_host` (default `"conductor"`),
  `:python_path` (for a user policy; default the application's), `:scope` (a function
  from agent name to boolean: the agents it watches; default all), `:manifest`
  (default `Symbiont.Manifest`), `:audit` (default `Symbiont.Conductor.Audit`),
  `:cooldown_ms`, `:max_actions_per_minute`, `:decide_timeout_ms`, `:memory_every_ms`
  (how often the resident memory of each host in scope is read, default 1000),
  `:memory_readings` (how many of them make its growth rate, default 10) and
  `:observe_halves_from` (from this many agent replicas on the node, a tick's snapshot is
  built in two halves at once, on two schedulers; default 2000). The application
  starts one with the options of `config :symbiont, conductor: [...]`
  (`enabled: false` to go without), where `pin_hold_ms` also sets how long the
  operator's pins hold (`Symbiont.Pins`; validated as the application starts).
  """
  use GenServer

  require Logger

  alias Symbiont.Conductor.{Act, Audit, Guard, Observe}

  @defaults [
    tick_ms: 1_000,
    policy: "symbiont.conductor:DefaultPolicy",
    policy_options: %{},
    policy_host: "conductor",
    scope: nil,
    manifest: Symbiont.Manifest,
    audit: Audit,
    cooldown_ms: 5_000,
    max_actions_per_minute: 30,
    decide_timeout_ms: 5_000,
    memory_every_ms: 1_000,
    memory_readings: 10,
    observe_halves_from: 2_000
  ]

  @doc false
  def start_link(opts) do
    with :ok <- validate_options(opts) do
      opts = Keyword.merge(@defaults, opts)
      GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))
    end
  end

  @positive [
    :tick_ms,
    :cooldown_ms,
    :max_actions_per_minute,
    :decide_timeout_ms,
    :memory_every_ms,
    :memory_readings,
    :observe_halves_from
  ]

  @doc """
  Checks the conductor's options (see "Options"; `config :symbiont, conductor: [...]`
  also takes `enabled:` and `pin_hold_ms:`): `:ok`, or `{:error, %Symbiont.Error{reason:
  :invalid}}` whose message names the option, its value and what is allowed.

      iex> Symbiont.Conductor.validate_options(tick_ms: 500, enabled: true)
      :ok
      iex> {:error, error} = Symbiont.Conductor.validate_options(tick_ms: 0)
      iex> {error.reason, error.message}
      {:invalid, "expected :tick_ms of the conductor to be a positive integer, got: 0"}
      iex> {:error, error} = Symbiont.Conductor.validate_options(tickms: 500)
      iex> error.message
      "expected the conductor's options to be among :audit, :cooldown_ms, :decide_timeout_ms, :enabled, :manifest, :max_actions_per_minute, :memory_every_ms, :memory_readings, :name, :observe_halves_from, :pin_hold_ms, :policy, :policy_host, :policy_options, :python_path, :scope, :tick_ms, got: :tickms"
  """
  @spec validate_options(term) :: :ok | {:error, Symbiont.Error.t()}
  def validate_options(opts), do: opts |> check_options() |> Symbiont.Error.wrap(:invalid)

  defp check_options(opts) when is_list(opts) do
    known = Enum.sort(Keyword.keys(@defaults) ++ [:enabled, :pin_hold_ms, :python_path, :name])

    Enum.find_value(opts, :ok, fn
      {key, value} when is_atom(key) ->
        case option(key, value) do
          :ok ->
            nil

          {:error, allowed} when allowed != :unknown ->
            {:error,
             "expected #{inspect(key)} of the conductor to be #{allowed}, got: #{inspect(value)}"}

          {:error, :unknown} ->
            {:error,
             "expected the conductor's options to be among #{Enum.map_join(known, ", ", &inspect/1)}, got: #{inspect(key)}"}
        end

      other ->
        {:error, "expected the conductor's options to be a keyword list, got: #{inspect(other)}"}
    end)
  end

  defp check_options(other),
    do: {:error, "expected the conductor's options to be a keyword list, got: #{inspect(other)}"}

  defp option(key, n) when key in @positive,
    do: if(is_integer(n) and n > 0, do: :ok, else: {:error, "a positive integer"})

  defp option(:policy, p) do
    if is_binary(p) and p =~ ~r/\A[\w.]+:\w+\z/,
      do: :ok,
      else: {:error, ~s(a "module:Class" string)}
  end

  defp option(:policy_options, o), do: if(is_map(o), do: :ok, else: {:error, "a map"})
  defp option(:policy_host, h), do: if(is_binary(h), do: :ok, else: {:error, "a host name"})
  defp option(:enabled, b), do: if(is_boolean(b), do: :ok, else: {:error, "a boolean"})
  defp option(:name, n), do: if(is_atom(n), do: :ok, else: {:error, "an atom"})

  defp option(:scope, s),
    do: if(s == nil or is_function(s, 1), do: :ok, else: {:error, "nil or a function of arity 1"})

  defp option(key, server) when key in [:manifest, :audit],
    do: if(is_atom(server) or is_pid(server), do: :ok, else: {:error, "a process name"})

  defp option(:python_path, paths) do
    if is_list(paths) and Enum.all?(paths, &is_binary/1),
      do: :ok,
      else: {:error, "a list of directory paths (strings)"}
  end

  defp option(:pin_hold_ms, ms) do
    case Symbiont.Pins.validate_hold(ms) do
      {:ok, _} -> :ok
      {:error, _} -> {:error, "a positive integer (milliseconds) or :infinity"}
    end
  end

  defp option(_key, _value), do: {:error, :unknown}

  @doc false
  def child_spec(opts),
    do: %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}

  @doc """
  The conductor's own state: ticks run, the last tick's time and actions, the last
  policy error (`nil` when the policy answered), the options in force.
  """
  @spec info(GenServer.server()) :: map
  def info(conductor \\ __MODULE__), do: GenServer.call(conductor, :info)

  @doc "Runs one tick now (observe, decide, act) and returns the actions it applied."
  @spec tick(GenServer.server()) :: [map]
  def tick(conductor \\ __MODULE__), do: GenServer.call(conductor, :tick, 60_000)

  @doc "The snapshot the policy would get now (see the moduledoc)."
  @spec snapshot(GenServer.server()) :: map
  def snapshot(conductor \\ __MODULE__), do: GenServer.call(conductor, :snapshot, 30_000)

  ## GenServer

  @impl true
  def init(opts) do
    # See "The loop" in the moduledoc: the healer is not starved by what it heals.
    Process.flag(:priority, :high)
    :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, Symbiont.Health.topic())
    audit = Keyword.fetch!(opts, :audit)

    # Resume from the audit trail: the cooldowns of the actions taken before a restart,
    # and the last remedy of each agent. The trail holds only what Symbiont recorded, at
    # the times it recorded it (Symbiont.Conductor.Audit); a time ahead of now (a clock
    # set back since) counts as now, so that no entry holds an agent back for ever.
    %{acted: acted, remedied: remedied, ladders: ladders} =
      Guard.resume(
        Enum.reverse(Audit.entries_or_none(1_000, audit)),
        System.system_time(:millisecond)
      )

    {prev, middle} = Observe.baseline(opts[:scope])

    state = %{
      opts: Map.new(opts),
      ticks: 0,
      # What the agents had counted when the conductor started: their past is not news,
      # what they do from now on is (the first tick's deltas count from here).
      prev: prev,
      # Where the next observation splits the agents in halves (Symbiont.Conductor.Observe).
      middle: middle,
      prev_at: System.monotonic_time(:millisecond),
      health: [],
      acted: acted,
      remedied: remedied,
      ladders: ladders,
      # Per host, {os pid, [{at_ms, rss_bytes}]} (newest first, Symbiont.Signals.memory/1),
      # read every :memory_every_ms; and when they were last read (monotonic ms).
      memory: %{},
      memory_at: nil,
      # Per host, {os pid, [{at_ms, cpu_us}]} (newest first), read with its memory.
      cpu: %{},
      scaled: %{},
      # Refusals and failures recorded and logged: {agent, action} => {result, why, when
      # last seen (system ms)} (not_done/5).
      refused: %{},
      recent: [],
      last_tick: nil,
      last_actions: [],
      last_error: nil
    }

    ensure_policy_host(state)
    schedule(state)
    {:ok, state}
  end

  defp schedule(state), do: Process.send_after(self(), :tick, state.opts.tick_ms)

  @impl true
  def handle_call(:info, _from, state) do
    info = %{
      ticks: state.ticks,
      last_tick: state.last_tick,
      last_actions: state.last_actions,
      last_error: state.last_error,
      options: Map.drop(state.opts, [:scope])
    }

    {:reply, info, state}
  end

  def handle_call(:tick, _from, state) do
    state = run_tick(state)
    {:reply, state.last_actions, state}
  end

  def handle_call(:snapshot, _from, state) do
    {snapshot, _state} = Observe.observe(state, false)
    {:reply, snapshot, state}
  end

  @impl true
  def handle_info(:tick, state) do
    state = run_tick(state)
    schedule(state)
    {:noreply, state}
  end

  def handle_info(%Symbiont.Event{topic: "symbiont.health"} = event, state) do
    case Symbiont.ControlPlane.decode(event) do
      {:ok, %{"kind" => _} = health} ->
        {:noreply, %{state | health: Enum.take([health | state.health], 100)}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  ## The tick

  defp run_tick(state) do
    started = System.monotonic_time(:microsecond)
    {snapshot, state} = Observe.observe(state, true)
    state = %{state | health: [], ticks: state.ticks + 1}

    {actions, state} =
      case decide(state, snapshot) do
        {:ok, actions} ->
          act(%{state | last_error: nil}, actions, snapshot)

        {:error, why} ->
          Logger.warning("conductor: the policy failed (#{why}); agents keep running")
          {[], %{state | last_error: why}}
      end

    duration = System.monotonic_time(:microsecond) - started

    Symbiont.Telemetry.execute(
      [:symbiont, :conductor, :tick],
      %{duration_us: duration, agents: length(snapshot["agents"]), actions: length(actions)},
      %{conductor: Map.get(state.opts, :name, __MODULE__), error: state.last_error}
    )

    %{state | last_tick: DateTime.utc_now(), last_actions: actions}
  end

  ## Decide

  defp ensure_policy_host(state) do
    name = state.opts.policy_host

    if Symbiont.Host.whereis(name) == nil do
      opts =
        [name: name] ++
          if(state.opts[:python_path], do: [python_path: state.opts.python_path], else: [])

      case Symbiont.Python.start(opts) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          Logger.error("conductor: the policy host could not start: #{inspect(reason)}")
      end
    end
  end

  defp decide(state, snapshot) do
    ensure_policy_host(state)
    args = [state.opts.policy, state.opts.policy_options, snapshot]
    timeout = state.opts.decide_timeout_ms

    case Symbiont.Python.call(state.opts.policy_host, "symbiont.conductor", "decide", args,
           timeout: timeout
         ) do
      {:ok, actions} when is_list(actions) ->
        {:ok, actions}

      {:ok, other} ->
        {:error, "the policy answered #{inspect(other, limit: 5)}, not a list of actions"}

      {:error, %{__exception__: true} = e} ->
        {:error, Exception.message(e)}

      {:error, reason} ->
        {:error, inspect(reason)}
    end
  end

  ## Act

  # Each action through the guardrails (Symbiont.Conductor.Guard), then applied
  # (Symbiont.Conductor.Act), published and logged; a refused or failed one is recorded
  # once (not_done/5).
  defp act(state, actions, snapshot) do
    agents = Map.new(snapshot["agents"], &{&1["name"], &1})

    Enum.reduce(actions, {[], state}, fn action, {applied, state} ->
      now = System.system_time(:millisecond)

      with {:ok, a} <- Guard.validate(action),
           agent = agents[a["agent"]],
           :ok <- Guard.check(state, a, agent, pins(a, agent), now),
           {:ok, done} <- Act.execute(state.opts, a, agent) do
        evidence = Map.get(a, "evidence", %{})
        fields = a |> Map.drop(~w(action agent reason evidence)) |> Map.merge(done)

        Symbiont.Remediation.publish(a["action"], a["agent"], a["reason"],
          by: "conductor",
          evidence: evidence,
          fields: fields
        )

        Logger.warning("conductor: #{a["action"]} #{a["agent"]}: #{a["reason"]}")

        # The cooldown runs from when the action was done: a rollback or an upgrade waits
        # for the deliveries in flight, and what they did meanwhile is its doing.
        done = System.system_time(:millisecond)
        {applied ++ [a], Guard.applied(state, a, agent, done)}
      else
        {result, why} when result in [:refused, :failed] ->
          {applied, not_done(state, action, result, why, now)}
      end
    end)
  end

  # The operator's pins on the action's agent, read now (not from the snapshot: a pin set
  # while the policy decided holds too); an agent out of scope is refused before them.
  defp pins(_a, nil), do: %{}
  defp pins(a, _agent), do: Symbiont.Pins.of(a["agent"])

  # An action refused or failed is recorded in the audit trail and logged once: the same
  # action refused (or failed) again for the same reason (the policy proposes it each
  # tick while its evidence lasts) is neither while it recurs less than a minute apart,
  # until something on that agent was done (Guard.applied/4 forgets its refusals then).
  defp not_done(state, action, result, why, now) do
    case Guard.refusal(state.refused, action, result, why, now) do
      {:quiet, refused} ->
        %{state | refused: refused}

      {:record, refused} ->
        proposed = if is_map(action), do: action, else: %{"action" => inspect(action)}
        verdict = %{"by" => "conductor", "result" => "#{result}: #{why}", "at_ms" => now}
        Audit.record(Map.merge(proposed, verdict), state.opts.audit)
        Logger.info("conductor: #{result} #{inspect(action, limit: 8)}: #{why}")
        %{state | refused: refused}
    end
  end
end

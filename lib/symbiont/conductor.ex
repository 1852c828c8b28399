defmodule Symbiont.Conductor do
  @moduledoc """
  The Integration Agent of DESIGN.md: on every tick it observes the system, asks a Python
  policy what to do, and applies the answer within guardrails. OTP supervision is the
  floor (hosts restart by themselves); the conductor is what makes the system heal and
  evolve by itself.

  ## The loop

  * **Observe** (every `:tick_ms`, default 1000): a snapshot of every agent in scope,
    aggregated over its replicas (queue, in flight, handled/failed/restarts/crashes and
    their change since the last tick: `crashes` are the deaths of a host charged to the
    agent, its code running, see "Blame" in `Symbiont.Manifest`, p99 latency, idleness, quarantine, the suspect delivery
    that failed before, the worst health its replicas reported since they started (a
    canary's is the deploy's to judge), whether a promoted version can be rolled back,
    how long ago the conductor last rolled it back, quarantined, released it or
    dead-lettered for it: its crashes before that remedy are answered, and are not
    evidence again; its failed starts in a row, which its own start-failure rule
    answers, see "Agents that cannot start" in `Symbiont.Agent`), the topology as
    `from -> topic -> to` edges, the topics a template matches, the templates, the
    health events since the last tick and the recent audit trail.
  * **Decide**: the snapshot goes to the policy, a Python class running in a host of its
    own (`"conductor"`): `symbiont.conductor:DefaultPolicy` unless `:policy` names
    another `"module:Class"`. It returns actions with reasons: `restart`, `scale`,
    `quarantine`, `release`, `rollback`, `deploy`, `retire`, `spawn`, `reroute`,
    `dead_letter` (see `python/symbiont/conductor.py`).
  * **Act**: each action is checked against the guardrails, applied, published on
    `symbiont.remediation` (`by: "conductor"`, with its evidence) and emitted as the
    telemetry event `[:symbiont, :conductor, :action]`; one that is refused or fails is
    recorded in the audit trail with why (`Symbiont.remediations/0`), and logged once: the
    same refusal again (a cooldown, tick after tick) is not logged again until it has not
    recurred for a minute.

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
    * the last replica of a `required` agent is never retired.

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
  `:cooldown_ms`, `:max_actions_per_minute`, `:decide_timeout_ms`. The application
  starts one with the options of `config :symbiont, conductor: [...]`
  (`enabled: false` to go without).
  """
  use GenServer

  require Logger

  alias Symbiont.Agent.Server
  alias Symbiont.Conductor.Audit

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
    decide_timeout_ms: 5_000
  ]

  @actions ~w(restart scale quarantine release rollback deploy retire spawn reroute dead_letter)

  # The actions that change what an agent runs or is given: its crashes before one of them
  # are answered, and spent as evidence (`"remedied_ago_ms"` in the snapshot). A restart
  # is not one: it runs the same code on the same events, so a crash loop goes on.
  @remedies ~w(quarantine release rollback dead_letter)

  # A refused or failed proposal is logged once, not again while it repeats with less than
  # this between two of its occurrences (the audit trail keeps every one).
  @quiet_ms 60_000

  # Health kinds, the worst first: an agent's health is the worst of its replicas'.
  @health_order ~w(failing overloaded degraded healthy)

  @doc false
  def start_link(opts) do
    opts = Keyword.merge(@defaults, opts)
    GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))
  end

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
    :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, Symbiont.Health.topic())
    audit = Keyword.fetch!(opts, :audit)

    # Resume from the audit trail: the cooldowns of the actions taken before a restart,
    # and the last remedy of each agent. The trail holds only what Symbiont recorded, at
    # the times it recorded it (Symbiont.Conductor.Audit); a time ahead of now (a clock
    # set back since) counts as now, so that no entry holds an agent back for ever.
    now = System.system_time(:millisecond)

    applied =
      for %{"by" => "conductor", "result" => "applied", "agent" => agent, "at_ms" => at} = e <-
            Enum.reverse(safe_entries(audit)),
          is_binary(agent) and is_integer(at),
          do: {e["action"], agent, min(at, now)}

    acted = Map.new(applied, fn {_, agent, at} -> {agent, at} end)
    remedied = for {action, agent, at} <- applied, action in @remedies, into: %{}, do: {agent, at}

    state = %{
      opts: Map.new(opts),
      ticks: 0,
      prev: %{},
      health: [],
      acted: acted,
      remedied: remedied,
      scaled: %{},
      recent: [],
      # Refusals and failures logged: {agent, action, {result, why}} => when last seen
      # (system ms).
      told: %{},
      last_tick: nil,
      last_actions: [],
      last_error: nil
    }

    ensure_policy_host(state)
    schedule(state)
    {:ok, state}
  end

  defp safe_entries(audit) do
    Audit.entries(1_000, audit)
  catch
    :exit, _ -> []
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
    {snapshot, _prev} = observe(state)
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
    {snapshot, prev} = observe(state)
    state = %{state | prev: prev, health: [], ticks: state.ticks + 1}

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
      %{error: state.last_error}
    )

    %{state | last_tick: DateTime.utc_now(), last_actions: actions}
  end

  ## Observe

  defp observe(state) do
    scope = state.opts.scope
    now = System.system_time(:millisecond)

    infos =
      for id <- Server.ids(),
          not String.ends_with?(id, "#canary"),
          name = Symbiont.Manifest.agent_name(id),
          scope == nil or scope.(name),
          {:ok, info} <- [Server.info(id)],
          do: info

    manifest = manifest_specs(state)
    deploys = deploys()

    agents =
      infos
      |> Enum.group_by(& &1.name)
      |> Enum.sort()
      |> Enum.map(fn {name, replicas} ->
        summarize(name, replicas, manifest, deploys[name], state, now)
      end)

    prev = Map.new(agents, &{&1["name"], Map.take(&1, ~w(handled failed restarts crashes))})

    snapshot = %{
      "tick" => state.ticks + 1,
      "now_ms" => now,
      "node" => Atom.to_string(node()),
      "agents" => agents,
      "topology" => topology(scope),
      "templates" => templates(),
      "health" => Enum.reverse(state.health),
      "remediations" => state.opts.audit |> safe_entries() |> Enum.take(20)
    }

    {snapshot, prev}
  end

  defp summarize(name, replicas, manifest, deploy, state, now) do
    spec = manifest[name] || hd(replicas).spec
    sum = fn key -> replicas |> Enum.map(&Map.fetch!(&1, key)) |> Enum.sum() end
    prev = Map.get(state.prev, name, %{})
    handled = sum.(:handled)
    failed = sum.(:failed)
    restarts = sum.(:restarts)
    crashes = sum.(:crashes)

    suspect =
      Enum.find_value(replicas, fn
        %{suspect: %{} = s, id: id} -> %{"id" => id, "topic" => s.topic, "attempts" => s.attempts}
        _ -> nil
      end)

    last_error =
      Enum.find_value(replicas, fn
        %{last_error: %{"message" => m}} -> m
        %{last_error: e} when e != nil -> inspect(e)
        _ -> nil
      end)

    # A durable replica whose journal cannot be written (a full disk): restarting it
    # would not bring the disk back.
    journal_error = Enum.find_value(replicas, &(&1.journal && &1.journal.error))

    %{
      "name" => name,
      "ids" => Enum.map(replicas, & &1.id),
      "replicas" => length(replicas),
      "managed" => Map.has_key?(manifest, name),
      "min_replicas" => Map.get(spec, :min_replicas, 1),
      "max_replicas" => Map.get(spec, :max_replicas, 1),
      "required" => Map.get(spec, :required, true),
      "version" => spec[:wasm] || "#{spec.module}:#{spec.class}",
      "queue" => sum.(:queue),
      "high_water" => spec.high_water,
      "in_flight" => sum.(:in_flight),
      "handled" => handled,
      "failed" => failed,
      "restarts" => restarts,
      "handled_delta" => handled - Map.get(prev, "handled", handled),
      "failed_delta" => failed - Map.get(prev, "failed", failed),
      "restarts_delta" => restarts - Map.get(prev, "restarts", restarts),
      "crashes" => crashes,
      "crashes_delta" => crashes - Map.get(prev, "crashes", crashes),
      # Failed starts in a row (its own start-failure rule retries, then quarantines it).
      "start_failures" => replicas |> Enum.map(&Map.get(&1, :start_failures, 0)) |> Enum.max(),
      "idle_ms" => replicas |> Enum.map(& &1.idle_ms) |> Enum.min(),
      "p99_us" =>
        replicas
        |> Enum.map(& &1.latency_us.p99)
        |> Enum.reject(&is_nil/1)
        |> Enum.max(fn -> nil end),
      "quarantined" => Enum.any?(replicas, & &1.quarantined),
      "suspect" => suspect,
      "last_error" => last_error,
      "journal_error" => journal_error,
      "health" => replicas |> Enum.map(& &1.health) |> worst_health(),
      "deployed" => deploy != nil,
      "promoted_ago_ms" => if(deploy, do: now - deploy, else: nil),
      "remedied_ago_ms" =>
        case state.remedied do
          %{^name => at} -> now - at
          _ -> nil
        end
    }
  end

  defp worst_health(kinds), do: Enum.find(@health_order, &(&1 in kinds))

  # The manifest's specs, by name; the conductor works without a manifest too.
  defp manifest_specs(state) do
    specs =
      try do
        Symbiont.Manifest.agents(state.opts.manifest)
      catch
        :exit, _ -> []
      end

    Map.new(specs, &{&1.name, &1})
  end

  # Agents whose last deploy step is a promotion (one that can be rolled back), with the
  # time of that promotion (system ms).
  defp deploys do
    history =
      try do
        Symbiont.Deploy.history()
      catch
        :exit, _ -> []
      end

    history
    |> Enum.reverse()
    |> Enum.reduce(%{}, fn entry, acc ->
      case entry do
        %{action: :promote, agent: agent, at: at} ->
          Map.put(acc, agent, DateTime.to_unix(at, :millisecond))

        %{action: :rollback, agent: agent} ->
          Map.delete(acc, agent)

        _ ->
          acc
      end
    end)
  end

  # The edges between agents in scope, and the topics a template's `:match` pattern
  # matches (published to, with how many subscribers), for the policy's evolution rule.
  defp topology(scope) do
    topology = Symbiont.topology()
    patterns = for {_name, t} <- templates(), p = t["match"], do: p

    edges =
      for %{topic: topic, publishers: pubs, subscribers: subs} <- topology.topics,
          p <- pubs,
          s <- subs,
          scope == nil or (scope.(p.name) and scope.(s.name)),
          uniq: true,
          do: %{"from" => p.name, "topic" => topic, "to" => s.name}

    topics =
      for %{topic: topic, publishers: pubs, subscribers: subs} <- topology.topics,
          Enum.any?(patterns, &Symbiont.Conductor.Template.match(&1, topic)),
          do: %{
            "topic" => topic,
            "published" => pubs |> Enum.map(& &1.count) |> Enum.sum(),
            "subscribers" => length(subs)
          }

    %{"edges" => edges, "topics" => topics}
  rescue
    _ -> %{"edges" => [], "topics" => []}
  end

  # The templates the policy may spawn from, by name: `match` (a topic pattern) and the
  # Python class or Wasm module, without the rest of the spec.
  defp templates do
    for {name, spec} <- Application.get_env(:symbiont, :templates, []), into: %{} do
      {to_string(name),
       %{
         "match" => Keyword.get(spec, :match),
         "python" => Keyword.get(spec, :python),
         "wasm" => Keyword.get(spec, :wasm)
       }}
    end
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

  defp act(state, actions, snapshot) do
    agents = Map.new(snapshot["agents"], &{&1["name"], &1})

    Enum.reduce(actions, {[], state}, fn action, {applied, state} ->
      now = System.system_time(:millisecond)

      with {:ok, a} <- validate(action),
           :ok <- guard(state, a, agents[a["agent"]], now),
           :ok <- execute(state, a, agents[a["agent"]]) do
        evidence = Map.get(a, "evidence", %{})
        fields = Map.drop(a, ~w(action agent reason evidence))

        Symbiont.Remediation.publish(a["action"], a["agent"], a["reason"],
          by: "conductor",
          evidence: evidence,
          fields: fields
        )

        Logger.warning("conductor: #{a["action"]} #{a["agent"]}: #{a["reason"]}")

        # The cooldown runs from when the action was done: a rollback or an upgrade waits
        # for the deliveries in flight, and what they did meanwhile is its doing.
        done = System.system_time(:millisecond)

        state = %{
          state
          | acted: Map.put(state.acted, a["agent"], done),
            remedied:
              if(a["action"] in @remedies,
                do: Map.put(state.remedied, a["agent"], done),
                else: state.remedied
              ),
            recent: [done | state.recent],
            scaled: record_scale(state.scaled, a, agents[a["agent"]], done)
        }

        {applied ++ [a], state}
      else
        {result, why} when result in [:refused, :failed] ->
          proposed = if is_map(action), do: action, else: %{"action" => inspect(action)}
          verdict = %{"by" => "conductor", "result" => "#{result}: #{why}", "at_ms" => now}
          entry = Map.merge(proposed, verdict)

          Audit.record(entry, state.opts.audit)
          {applied, tell(state, action, proposed, {result, why}, now)}
      end
    end)
  end

  # Logs a refused or failed proposal unless the same one was seen within @quiet_ms: a
  # proposal refused tick after tick (a cooldown) is one line, not one a tick.
  defp tell(state, action, proposed, {result, why} = verdict, now) do
    told = Map.filter(state.told, fn {_, at} -> now - at < @quiet_ms end)
    key = {proposed["agent"], proposed["action"], verdict}

    unless Map.has_key?(told, key),
      do: Logger.info("conductor: #{result} #{inspect(action, limit: 8)}: #{why}")

    %{state | told: Map.put(told, key, now)}
  end

  defp validate(%{"action" => action, "agent" => agent, "reason" => reason} = a)
       when action in @actions and is_binary(agent) and is_binary(reason) do
    case Map.get(a, "evidence", %{}) do
      %{} -> {:ok, a}
      other -> {:refused, "evidence must be a map, got: #{inspect(other)}"}
    end
  end

  defp validate(%{"action" => action}) when action not in @actions,
    do: {:refused, "unknown action #{inspect(action)}; allowed: #{Enum.join(@actions, ", ")}"}

  defp validate(other),
    do:
      {:refused,
       "expected an action to be a map with action, agent and reason strings, got: #{inspect(other, limit: 8)}"}

  defp guard(state, a, agent, now) do
    cond do
      agent == nil and a["action"] != "spawn" ->
        {:refused, "no agent #{inspect(a["agent"])} in the conductor's scope"}

      now - Map.get(state.acted, a["agent"], -1_000_000_000) < state.opts.cooldown_ms ->
        {:refused, "cooldown: acted on #{a["agent"]} less than #{state.opts.cooldown_ms} ms ago"}

      Enum.count(state.recent, &(now - &1 < 60_000)) >= state.opts.max_actions_per_minute ->
        {:refused, "rate limit: #{state.opts.max_actions_per_minute} actions a minute"}

      true ->
        guard_action(state, a, agent, now)
    end
  end

  defp guard_action(state, %{"action" => "scale"} = a, agent, now) do
    n = a["replicas"]

    cond do
      not is_integer(n) ->
        {:refused, "scale needs replicas, a positive integer, got: #{inspect(n)}"}

      not agent["managed"] ->
        {:refused, "#{a["agent"]} is not in the manifest; only its agents are scaled"}

      n < agent["min_replicas"] or n > agent["max_replicas"] ->
        {:refused,
         "replicas #{n} is outside #{agent["min_replicas"]}..#{agent["max_replicas"]} for #{a["agent"]}"}

      flapping?(state, a, agent, now) ->
        {:refused,
         "hysteresis: #{a["agent"]} was scaled the other way less than #{2 * state.opts.cooldown_ms} ms ago"}

      true ->
        :ok
    end
  end

  defp guard_action(_state, %{"action" => "retire"} = a, agent, _now) do
    if agent["required"],
      do: {:refused, "#{a["agent"]} is required: its last replica is never retired"},
      else: :ok
  end

  defp guard_action(_state, _a, _agent, _now), do: :ok

  defp flapping?(state, a, agent, now) do
    direction = if a["replicas"] > agent["replicas"], do: :out, else: :in

    case state.scaled[a["agent"]] do
      {last, at} -> last != direction and now - at < 2 * state.opts.cooldown_ms
      nil -> false
    end
  end

  defp record_scale(scaled, %{"action" => "scale", "agent" => name, "replicas" => n}, agent, now),
    do: Map.put(scaled, name, {if(n > agent["replicas"], do: :out, else: :in), now})

  defp record_scale(scaled, _a, _agent, _now), do: scaled

  defp execute(state, %{"action" => action} = a, agent) do
    case apply_action(action, a, agent, state) do
      :ok -> :ok
      {:ok, _} -> :ok
      {:error, why} when is_binary(why) -> {:failed, why}
      {:error, why} -> {:failed, inspect(why)}
    end
  end

  defp apply_action("restart", a, agent, _state) do
    each_replica(agent, fn id ->
      {:ok, info} = Server.info(id)

      if info.spec[:wasm],
        do: Server.restart(id),
        else: Symbiont.Host.restart(info.host, a["reason"])
    end)
  end

  defp apply_action("scale", a, _agent, state),
    do: Symbiont.Manifest.scale(a["agent"], a["replicas"], state.opts.manifest)

  defp apply_action("quarantine", a, agent, _state),
    do: each_replica(agent, &Server.quarantine(&1, a["reason"]))

  defp apply_action("release", _a, agent, _state), do: each_replica(agent, &Server.release/1)

  defp apply_action("rollback", a, _agent, _state), do: Symbiont.Deploy.rollback(a["agent"])

  defp apply_action("deploy", %{"path" => path} = a, _agent, _state) when is_binary(path),
    do: Symbiont.Deploy.deploy(a["agent"], path)

  defp apply_action("deploy", _a, _agent, _state), do: {:error, "deploy needs path, a string"}

  defp apply_action("retire", a, agent, state) do
    if agent["managed"],
      do: Symbiont.Manifest.retire(a["agent"], state.opts.manifest),
      else: each_replica(agent, &Server.retire(&1, nil))
  end

  defp apply_action("spawn", a, _agent, state) do
    templates = Application.get_env(:symbiont, :templates, [])

    with {:ok, template} <- fetch_template(templates, a["template"]) do
      spec =
        template
        |> Keyword.delete(:match)
        |> Keyword.merge(name: a["agent"], required: false)
        |> Keyword.update(
          :config,
          Map.get(a, "config", %{}),
          &Map.merge(&1, Map.get(a, "config", %{}))
        )

      Symbiont.Manifest.spawn_agent(spec, state.opts.manifest)
    end
  end

  # The waiting events of the agent's other replicas go to replica `to`; the reconciler
  # starts the retired replicas again, empty.
  defp apply_action("reroute", %{"to" => to}, agent, _state) when is_binary(to) do
    case Server.whereis(to) do
      nil ->
        {:error, "no agent #{inspect(to)} to reroute to"}

      heir ->
        each_replica(agent, fn id -> if id != to, do: Server.retire(id, heir), else: :ok end)
    end
  end

  defp apply_action("reroute", _a, _agent, _state), do: {:error, "reroute needs to, an agent id"}

  defp apply_action("dead_letter", a, agent, _state) do
    case agent["suspect"] do
      %{"id" => id} -> Server.drop_suspect(id, a["reason"])
      nil -> {:error, "no suspect delivery waits"}
    end
  end

  defp fetch_template(templates, name) when is_binary(name) do
    case Enum.find(templates, fn {k, _} -> to_string(k) == name end) do
      {_, spec} ->
        {:ok, spec}

      nil ->
        {:error,
         "no template #{inspect(name)}; templates: #{inspect(Enum.map(templates, &to_string(elem(&1, 0))))}"}
    end
  end

  defp fetch_template(_templates, other),
    do: {:error, "spawn needs template, a name, got: #{inspect(other)}"}

  defp each_replica(agent, fun) do
    Enum.reduce_while(agent["ids"], :ok, fn id, :ok ->
      case fun.(id) do
        :ok -> {:cont, :ok}
        {:ok, _} -> {:cont, :ok}
        error -> {:halt, error}
      end
    end)
  end
end

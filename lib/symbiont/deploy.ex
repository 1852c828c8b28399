defmodule Symbiont.Deploy do
  # The canary gate's defaults, before the moduledoc that shows them.
  @defaults [
    window_ms: 5_000,
    min_events: 20,
    max_windows: 6,
    start_ms: 30_000,
    max_error_increase: 0.05,
    max_p99_ratio: 2.0,
    p99_slack_us: 5_000,
    alpha: 1.0e-3
  ]

  @moduledoc """
  Health-gated roll-forward of Wasm agents, and rollback (README.md, "Wasm").

  `deploy/3` first checks that the new module can start (`Symbiont.Agent.Probe`: it is
  compiled, its exports checked against the ABI, and instantiated within the agent's
  limits, in a Python process of its own): one that cannot (not Wasm at all, a broken
  ABI, a trap in `symbiont_init`) is refused with
  `{:error, %Symbiont.Error{reason: :cannot_start}}` and no canary starts. Then it loads the new module beside the old one as a **canary**: one more
  replica of the agent, registered with the role `:canary` (`Symbiont.Observation`; its
  id is `"name#canary"`, in a host of its own, also `"name#canary"`, so that the
  two versions' latencies are not mixed) that starts from the
  first replica's state (through `symbiont_migrate`) and joins the agent's queue group,
  so it gets its share of the events. An event the canary fails on is handed to the
  stable version instead of being tried again there: a bad version loses nothing.

  After each window (`:window_ms`) the canary is compared with the stable version, the
  way the conductor's signals compare a version with its baseline (`Symbiont.Stats`,
  docs/ANALYTICS.md):

    * its **handling times** since it serves (what its handler took per event: see
      `Symbiont.Signals`) against the stable replicas' own history (their last handling
      times), with no fixed sample count: it is **rolled back** as soon as enough of its
      samples are slower than `:max_p99_ratio` times the stable p99 (and that plus
      `:p99_slack_us`), or than as much over the stable p50, that this would happen by
      chance with a probability of at most `:alpha`. A version slow enough to handle
      only 2 or 3 events in its window is judged on those: 3 of 3 above the bar is a
      probability of about 1e-6. A single slow first call is not enough;
    * its **errors**: rolled back as soon as they are that unlikely against the stable
      version's error rate (`:max_error_increase` above it at least), and once it has
      handled `:min_events`, whenever its error rate exceeds theirs by more than
      `:max_error_increase`.

  Once it has handled `:min_events` with neither, it is **promoted**. Each window is a
  look at the evidence: over the `:max_windows` looks, a version that is no worse is
  rolled back by chance with a probability of at most `:max_windows` times `:alpha`.
  Promotion upgrades every stable replica
  in place (`Symbiont.Agent.Server.upgrade/3`: same name, queue and state), then retires
  the canary, whose waiting events go to a replica. Rolling back retires the canary the
  same way. A canary that never gets `:min_events` within `:max_windows` windows is
  rolled back too: a version is promoted on evidence only.

  The windows start once the canary serves (its host process started, its module
  loaded), not when it was spawned: a cold start is no evidence either way. A canary
  that does not serve within `:start_ms` is rolled back.

  `rollback/2` does it by hand: it rolls back a running canary, or returns a promoted
  agent to the version it had before.

  Each step is published on `symbiont.remediation` (`Symbiont.Remediation`, `by:
  "deploy"`) with the action `"deploy"`, `"promote"` or `"rollback"` and the fields
  `"from"` and `"to"` (module paths), and kept in `history/1`.

  Options of `deploy/3` and their defaults: `#{inspect(@defaults)}`.
  """
  use GenServer

  require Logger

  alias Symbiont.Agent.Server
  alias Symbiont.Stats

  @history 100
  # How often a new canary is asked whether it serves yet.
  @ready_poll_ms 20

  @doc false
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc """
  Starts a canary of `agent` running the Wasm module at `path`; promotion or rollback
  follow by themselves (see the moduledoc). Returns once the canary is started, or
  `{:error, %Symbiont.Error{}}` with no canary: `:cannot_start` when the module cannot
  start (what is wrong with it, from its check), `:not_found` for an agent that does not
  run here or a module that does not exist, `:invalid` for a bad option or an agent that
  is not a Wasm agent, `:conflict` for an agent with a deploy in progress, `:failed` when
  the canary does not start.

      {:ok, %{canary: "pricing#canary"}} = Symbiont.Deploy.deploy("pricing", "priv/wasm/pricing_v2.wasm")
  """
  @spec deploy(String.t(), String.t(), keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def deploy(agent, path, opts \\ []) when is_binary(agent) and is_binary(path) do
    with {:ok, opts} <- opts |> validate_opts() |> Symbiont.Error.wrap(:invalid, agent: agent),
         do: GenServer.call(__MODULE__, {:deploy, agent, path, opts}, 60_000)
  end

  @doc """
  Rolls `agent` back: its running canary, or else the last promotion. Option `:by`, who
  does it, as the `"rollback"` step says (`"deploy"`, `"operator"`, `"conductor"`;
  default `"deploy"`). `{:error, %Symbiont.Error{reason: :not_found}}` for an agent with
  nothing to roll back, or whose replicas no longer run.
  """
  @spec rollback(String.t(), keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def rollback(agent, opts \\ []) when is_binary(agent),
    do: GenServer.call(__MODULE__, {:rollback, agent, Keyword.get(opts, :by, "deploy")}, 60_000)

  @doc "The deploy steps of `agent` (of every agent with `nil`), newest first."
  @spec history(String.t() | nil) :: [map]
  def history(agent \\ nil), do: GenServer.call(__MODULE__, {:history, agent})

  @doc "The topic deploy steps are published on."
  @spec topic() :: String.t()
  def topic, do: Symbiont.Remediation.topic()

  defp validate_opts(opts) do
    Enum.reduce_while(opts, {:ok, @defaults}, fn
      {key, value}, {:ok, acc}
      when key in [
             :window_ms,
             :min_events,
             :max_windows,
             :start_ms,
             :p99_slack_us
           ] and
             is_integer(value) and value > 0 ->
        {:cont, {:ok, Keyword.put(acc, key, value)}}

      {key, value}, {:ok, acc}
      when key in [:max_error_increase, :max_p99_ratio] and is_number(value) and value >= 0 ->
        {:cont, {:ok, Keyword.put(acc, key, value)}}

      {:alpha, value}, {:ok, acc} when is_number(value) and value > 0 and value < 1 ->
        {:cont, {:ok, Keyword.put(acc, :alpha, value)}}

      {:min_latency_samples, _}, _ ->
        {:halt,
         {:error,
          "deploy option :min_latency_samples was removed: the canary's handling times are compared whatever their number (a slow version gives few); :alpha sets how sure the comparison must be"}}

      {key, value}, _ ->
        {:halt,
         {:error,
          "deploy option #{inspect(key)} cannot be #{inspect(value)}; allowed: #{inspect(Keyword.keys(@defaults))}, positive integers (ratios: numbers >= 0; :alpha: a number between 0 and 1)"}}
    end)
  end

  ## GenServer

  @impl true
  def init(nil), do: {:ok, %{canaries: %{}, previous: %{}, history: []}}

  @impl true
  def handle_call({:history, agent}, _from, state),
    do: {:reply, Enum.filter(state.history, &(agent == nil or &1.agent == agent)), state}

  def handle_call({:deploy, agent, path, opts}, _from, state) do
    with :ok <- not_deploying(state, agent),
         {:ok, [first | _] = stable} <- replicas(agent),
         {:ok, spec} <- Symbiont.Agent.with_wasm(first.spec, path),
         :ok <- Symbiont.Agent.Probe.check(spec),
         {:ok, canary} <- start_canary(agent, first, spec) do
      t0 = System.monotonic_time(:millisecond)

      deploy = %{
        agent: agent,
        from: first.spec,
        to: spec,
        canary: canary,
        ref: Process.monitor(canary),
        stable: Enum.map(stable, & &1.pid),
        # Set when the canary serves: the windows, the counts and latencies start there.
        baseline: nil,
        t0: t0,
        windows: 0,
        opts: opts
      }

      Process.send_after(self(), {:check, agent}, @ready_poll_ms)
      state = step(state, :deploy, deploy, "canary #{canary_id(agent)} started", %{})

      {:reply, {:ok, %{agent: agent, canary: canary_id(agent), to: spec.wasm}},
       put_in(state.canaries[agent], deploy)}
    else
      {:error, message} -> {:reply, {:error, message}, state}
    end
  end

  def handle_call({:rollback, agent, by}, _from, state) do
    case state do
      %{canaries: %{^agent => deploy}} ->
        state = roll_back(state, deploy, "by hand", %{}, by)
        {:reply, {:ok, %{agent: agent, to: deploy.from.wasm}}, state}

      %{previous: %{^agent => [{spec, replaced} | older]}} ->
        with {:ok, stable} <- replicas(agent) do
          for r <- stable, do: {:ok, _} = Server.upgrade(r.pid, spec)
          record_version(spec)
          deploy = %{agent: agent, from: replaced, to: spec}
          state = step(state, :rollback, deploy, "by hand, to the version before", %{}, by)
          state = put_in(state.previous[agent], older)
          {:reply, {:ok, %{agent: agent, to: spec.wasm}}, state}
        else
          {:error, message} -> {:reply, {:error, message}, state}
        end

      _ ->
        message = "agent #{inspect(agent)} has no deploy to roll back"
        {:reply, {:error, Symbiont.Error.new(:not_found, message, agent: agent)}, state}
    end
  end

  @impl true
  def handle_info({:check, agent}, state) do
    case state.canaries do
      %{^agent => deploy} -> {:noreply, check(state, deploy)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _, reason}, state) do
    case Enum.find(state.canaries, fn {_, d} -> d.ref == ref end) do
      nil ->
        {:noreply, state}

      {agent, deploy} ->
        state = %{state | canaries: Map.delete(state.canaries, agent)}
        why = "the canary went down: #{inspect(reason)}"
        {:noreply, step(state, :rollback, deploy, why, %{})}
    end
  end

  ## The decision

  defp check(state, %{baseline: nil, opts: opts} = deploy) do
    waited = System.monotonic_time(:millisecond) - deploy.t0

    cond do
      match?({:ok, %{status: :ready}}, Server.info(deploy.canary)) ->
        {:ok, canary} = Server.metrics(deploy.canary)
        now = System.monotonic_time(:millisecond)
        baseline = {counts(deploy.stable), {canary.handled, canary.failed}}
        deploy = %{deploy | baseline: baseline, t0: now}
        Process.send_after(self(), {:check, deploy.agent}, opts[:window_ms])
        put_in(state.canaries[deploy.agent], deploy)

      waited >= opts[:start_ms] ->
        roll_back(state, deploy, "the canary did not serve within #{opts[:start_ms]} ms", %{})

      true ->
        Process.send_after(self(), {:check, deploy.agent}, @ready_poll_ms)
        state
    end
  end

  defp check(state, %{opts: opts} = deploy) do
    evidence = evidence(deploy)
    deploy = %{deploy | windows: deploy.windows + 1}
    canary_events = evidence["canary"]["events"]

    enough? = canary_events >= opts[:min_events]

    cond do
      why = regression(evidence, opts, enough?) ->
        roll_back(state, deploy, why, evidence)

      not enough? and deploy.windows < opts[:max_windows] ->
        Process.send_after(self(), {:check, deploy.agent}, opts[:window_ms])
        put_in(state.canaries[deploy.agent], deploy)

      not enough? ->
        why =
          "not enough canary traffic: #{canary_events} events in #{evidence["window_ms"]} ms (#{opts[:min_events]} needed)"

        roll_back(state, deploy, why, evidence)

      true ->
        promote(state, deploy, evidence)
    end
  end

  # Why the canary is worse than the stable version, or nil (see the moduledoc): its
  # handling times or its errors, as unlikely as :alpha by chance, at any window; its
  # error rate once it has handled :min_events (`enough?`).
  defp regression(%{"canary" => c, "stable" => s} = evidence, opts, enough?) do
    latency = evidence["latency"]

    errors =
      Stats.failures(c["events"], c["failed"], s["error_rate"],
        min_increase: opts[:max_error_increase]
      )

    cond do
      Stats.worse?(errors, opts[:alpha]) or
          (enough? and c["error_rate"] > s["error_rate"] + opts[:max_error_increase]) ->
        "error rate #{percent(c["error_rate"])} against #{percent(s["error_rate"])} for the stable version"

      latency != nil and latency["p"] <= opts[:alpha] ->
        "p99 latency #{c["p99_us"]} µs against #{s["p99_us"]} µs for the stable version " <>
          "(handling time: #{latency["k"]} of #{latency["n"]} samples above #{latency["bar_us"]} µs, " <>
          "p = #{:erlang.float_to_binary(latency["p"] * 1.0, scientific: 1)})"

      true ->
        nil
    end
  end

  defp promote(state, deploy, evidence) do
    for pid <- deploy.stable, do: {:ok, _} = Server.upgrade(pid, deploy.to)
    record_version(deploy.to)
    retire_canary(deploy)
    state = %{state | canaries: Map.delete(state.canaries, deploy.agent)}
    state = update_in(state.previous[deploy.agent], &[{deploy.from, deploy.to} | &1 || []])
    step(state, :promote, deploy, "healthy for #{evidence["window_ms"]} ms", evidence)
  end

  # The manifest's replicas started later (a scale out, a repair) run the version in
  # force; an agent outside the manifest has nothing to record.
  defp record_version(spec) do
    Symbiont.Manifest.put_spec(spec, Symbiont.Instance.manifest_of(spec.name))
  catch
    :exit, _ -> :error
  end

  defp roll_back(state, deploy, why, evidence, by \\ "deploy") do
    retire_canary(deploy)
    state = %{state | canaries: Map.delete(state.canaries, deploy.agent)}
    step(state, :rollback, deploy, why, evidence, by)
  end

  # Returns once the canary is gone, so that a step published after it finds it gone.
  defp retire_canary(deploy) do
    :ok = Server.retire(deploy.canary, hd(deploy.stable))

    receive do
      {:DOWN, ref, :process, _, _} when ref == deploy.ref -> :ok
    after
      5_000 -> Process.demonitor(deploy.ref, [:flush])
    end

    Symbiont.Host.stop(canary_id(deploy.agent))
  end

  # Events handled and failed since the deploy, error rates and p99 latencies, for the
  # canary and for the stable replicas together.
  # "latency": the canary's handling times since the deploy against the stable
  # replicas' last ones (Symbiont.Stats.latency/3), or nil.
  defp evidence(deploy) do
    since = deploy.t0
    stable = for pid <- deploy.stable, {:ok, m} <- [Server.metrics(pid)], do: m
    {:ok, canary} = Server.metrics(deploy.canary)
    {{handled0, failed0}, {canary_handled0, canary_failed0}} = deploy.baseline
    canary_times = handling(canary.samples, since)
    stable_times = Enum.flat_map(stable, &handling(&1.samples, nil))
    %{opts: opts} = deploy
    baseline = Stats.baseline(stable_times)
    effect = [ratio: opts[:max_p99_ratio], slack_us: opts[:p99_slack_us]]

    %{
      "window_ms" => System.monotonic_time(:millisecond) - since,
      "canary" =>
        summary(canary.handled - canary_handled0, canary.failed - canary_failed0, canary_times),
      "stable" =>
        summary(
          Enum.sum(Enum.map(stable, & &1.handled)) - handled0,
          Enum.sum(Enum.map(stable, & &1.failed)) - failed0,
          stable_times
        ),
      "latency" => latency_evidence(Stats.latency(canary_times, baseline, effect))
    }
  end

  # The handling times (µs) of samples acked since `since` (all with nil).
  defp handling(samples, since),
    do: for({at, _latency, us} <- samples, since == nil or at >= since, do: us)

  defp latency_evidence(nil), do: nil

  defp latency_evidence(e) do
    %{
      "n" => e.n,
      "k" => e.k,
      "bar_us" => e.bar_us,
      "test" => Atom.to_string(e.test),
      "p" => e.p
    }
  end

  defp summary(handled, failed, times) do
    events = handled + failed

    %{
      "events" => events,
      "failed" => failed,
      "error_rate" => if(events == 0, do: 0.0, else: failed / events),
      "samples" => length(times),
      "p99_us" => Stats.percentile(times, 0.99)
    }
  end

  defp percent(rate), do: "#{Float.round(rate * 100, 1)}%"

  ## Replicas and the canary

  defp not_deploying(state, agent) do
    if Map.has_key?(state.canaries, agent),
      do:
        {:error,
         Symbiont.Error.new(
           :conflict,
           "agent #{inspect(agent)} has a deploy in progress; roll it back first",
           agent: agent
         )},
      else: :ok
  end

  # The agent's stable replicas (the registry of roles, Symbiont.Observation).
  defp replicas(agent) do
    found =
      for id <- Symbiont.Observation.ids(agent, :stable),
          {:ok, info} <- [Server.info(id)],
          do: info

    if found == [],
      do:
        {:error,
         Symbiont.Error.new(:not_found, "no agent named #{inspect(agent)} runs on #{node()}",
           agent: agent
         )},
      else: {:ok, found}
  end

  defp counts(pids) do
    stats = for pid <- pids, {:ok, m} <- [Server.metrics(pid)], do: {m.handled, m.failed}
    {Enum.sum(Enum.map(stats, &elem(&1, 0))), Enum.sum(Enum.map(stats, &elem(&1, 1)))}
  end

  # The canary runs in a host of its own: in the stable version's host, each would wait
  # behind the other's calls and their latencies could not be told apart.
  defp start_canary(agent, first, spec) do
    {:ok, %{state_bin: state_bin}} = Server.metrics(first.pid)
    id = canary_id(agent)
    opts = [id: id, host: id, spec: spec, state_bin: state_bin, role: :canary]
    child = Supervisor.child_spec({Server, opts ++ [fallback: first.pid]}, restart: :temporary)

    with {:ok, _host} <- start_canary_host(id),
         {:ok, pid} <- DynamicSupervisor.start_child(Symbiont.Agents, child) do
      {:ok, pid}
    else
      {:error, reason} ->
        Symbiont.Host.stop(id)
        message = "the canary of #{inspect(agent)} could not start: #{inspect(reason)}"
        {:error, Symbiont.Error.new(:failed, message, agent: agent)}
    end
  end

  defp start_canary_host(id) do
    case Symbiont.Host.whereis(id) do
      nil -> Symbiont.Python.start(name: id)
      pid -> {:ok, pid}
    end
  end

  defp canary_id(agent), do: agent <> "#canary"

  ## The record

  defp step(state, action, deploy, reason, evidence, by \\ "deploy") do
    entry = %{
      action: action,
      agent: deploy.agent,
      from: deploy.from.wasm,
      to: deploy.to.wasm,
      reason: reason,
      evidence: evidence,
      at: DateTime.utc_now()
    }

    level = if action == :rollback, do: :warning, else: :info

    Logger.log(
      level,
      "#{action} #{deploy.agent}: #{Path.relative_to_cwd(entry.from)} -> #{Path.relative_to_cwd(entry.to)}: #{reason}"
    )

    Symbiont.Remediation.publish(Atom.to_string(action), deploy.agent, reason,
      by: by,
      evidence: evidence,
      fields: %{"from" => entry.from, "to" => entry.to}
    )

    %{state | history: Enum.take([entry | state.history], @history)}
  end
end

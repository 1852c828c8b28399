defmodule Symbiont.HostHelpers do
  @moduledoc false
  # Shared by the tests that run real Python hosts.

  import ExUnit.Assertions

  @fixtures Path.expand("../fixtures/python", __DIR__)

  def fixtures, do: @fixtures

  @doc """
  What a host killed with SIGKILL is said to have died of: the signal; or, when a frame
  written to it found its pipe closed before its exit status came (the port then closes
  without one), that (see `Symbiont.Host`'s crash reasons).
  """
  def killed, do: ~r/signal 9|a write found its pipe closed/

  @doc "A TCP port on 127.0.0.1 that was free a moment ago."
  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc """
  The Wasm component of `file.py:Class` (of test/fixtures/python, or a path from the
  project's root), built by `symbiont build-wasm` into `out` (default:
  _build/test-components) and compiled into the hosts' module cache. A build takes tens
  of seconds, once: built components are kept in _build/wasm-components by the hash of
  their sources.
  """
  def component!(target, out \\ nil) do
    [file, class] = String.split(target, ":")

    source =
      if String.contains?(file, "/"), do: Path.expand(file), else: Path.join(@fixtures, file)

    name = "#{Path.basename(file, ".py")}-#{class}.wasm"
    out = Path.expand(out || Path.join("_build/test-components", name))
    python = System.get_env("SYMBIONT_PYTHON") || Path.expand(".venv/bin/python")

    args =
      ~w(-m symbiont build-wasm #{source}:#{class} -o #{out}) ++
        ~w(--cache-dir #{Path.expand("_build/wasm-components")} --precompile)

    # Builds of the same sources at once (test files, pytest beside) run one build: the
    # first holds the cache's lock, the others then copy what it built.
    {output, status} =
      System.cmd(python, args,
        env: [{"PYTHONPATH", Path.expand("python")}],
        stderr_to_stdout: true
      )

    if status != 0, do: raise("symbiont build-wasm #{target} failed:\n#{output}")
    out
  end

  def unique_name(prefix \\ "test"), do: "#{prefix}-#{System.unique_integer([:positive])}"

  @doc """
  Starts a host under the test supervisor and waits for its handshake; with `agent:`
  (agent spec options), also that agent, in the host, id the host's name, and waits
  until it serves (adds `:agent_pid`).
  """
  def start_host!(opts \\ []) do
    name = Keyword.get_lazy(opts, :name, fn -> unique_name() end)
    {agent, opts} = Keyword.pop(opts, :agent)
    attach_host_events(name)
    opts = opts |> Keyword.put(:name, name) |> Keyword.put_new(:python_path, [@fixtures])
    pid = ExUnit.Callbacks.start_supervised!({Symbiont.Host, opts}, id: name)
    assert_receive {:host_start, ^name, %{os_pid: os_pid}}, 10_000
    host = %{name: name, pid: pid, os_pid: os_pid}

    if agent,
      do: Map.put(host, :agent_pid, start_agent_in!(name, [id: name] ++ agent)),
      else: host
  end

  @doc "Starts agent `opts` (with `:id`) in `host` and waits until it serves."
  def start_agent_in!(host, opts) do
    id = Keyword.fetch!(opts, :id)
    attach_host_events(id)
    child = {Symbiont.Agent.Server, [host: host] ++ opts}
    pid = ExUnit.Callbacks.start_supervised!(child, id: {:agent, id})
    assert_receive {:agent_start, ^id, _}, 10_000
    pid
  end

  @doc """
  Starts a host running one agent named like the host (`prefix-N`) with `agent_opts`;
  returns `start_host!/1`'s map plus `:agent`, the agent's name.
  """
  def start_agent_host!(prefix, agent_opts) do
    name = unique_name(prefix)
    host = start_host!(name: name, agent: [name: name] ++ agent_opts)
    Map.put(host, :agent, name)
  end

  @doc """
  Starts a host running one agent named like the host (`prefix-N`), both under the
  application's supervisors as the manifest starts them (so `Symbiont.hosts/0`,
  `Symbiont.agents/0` and the status page list them), and waits until it serves; stopped
  when the test ends. Returns `%{name:, os_pid:}`.
  """
  def start_app_agent!(prefix, agent_opts) do
    name = unique_name(prefix)
    attach_host_events(name)
    host = {Symbiont.Host, name: name, python_path: [@fixtures]}
    {:ok, _} = DynamicSupervisor.start_child(Symbiont.Hosts, host)
    agent = {Symbiont.Agent.Server, [host: name, id: name, name: name] ++ agent_opts}
    {:ok, agent_pid} = DynamicSupervisor.start_child(Symbiont.Agents, agent)

    # The agent too: a quarantined one has left its host's slot, and Host.stop/1 stops
    # only the agents in its slots.
    ExUnit.Callbacks.on_exit(fn ->
      Symbiont.Host.stop(name)
      DynamicSupervisor.terminate_child(Symbiont.Agents, agent_pid)
    end)

    assert_receive {:host_start, ^name, %{os_pid: os_pid}}, 10_000
    assert_receive {:agent_start, ^name, _}, 10_000
    %{name: name, os_pid: os_pid}
  end

  @doc """
  Sends {:host_start | :host_crash | :agent_start, name, metadata} to the caller for the
  host, or the agent id, `name`.
  """
  def attach_host_events(name) do
    me = self()

    for {event, tag} <- [
          {[:symbiont, :host, :start], :host_start},
          {[:symbiont, :host, :crash], :host_crash},
          {[:symbiont, :agent, :start], :agent_start}
        ] do
      id = {tag, name, make_ref()}

      :ok =
        Symbiont.Telemetry.attach(
          id,
          event,
          fn _e, m, meta, _ ->
            if Map.get(meta, :id, meta.host) == name,
              do: send(me, {tag, name, Map.merge(meta, m)})
          end,
          nil
        )

      ExUnit.Callbacks.on_exit(fn -> Symbiont.Telemetry.detach(id) end)
    end

    :ok
  end

  @doc "Waits (bounded) until `fun` returns true, polling an outside condition."
  def wait_until(fun, timeout \\ 2_000, step \\ 20),
    do: wait_until_deadline(fun, System.monotonic_time(:millisecond) + timeout, step)

  defp wait_until_deadline(fun, deadline, step) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(step)
        wait_until_deadline(fun, deadline, step)
    end
  end

  @doc """
  Waits (bounded) for a health event of `kind` from `agent` on `symbiont.health` (the
  caller must be subscribed), skipping others; returns its decoded map.
  """
  def await_health(agent, kind, timeout \\ 10_000),
    do: await_payload("symbiont.health", agent, {"kind", kind}, timeout)

  @doc """
  Waits (bounded) for a remediation `action` on `agent` on `symbiont.remediation` (the
  caller must be subscribed), skipping others; returns its decoded map.
  """
  def await_remediation(agent, action, timeout \\ 10_000),
    do: await_payload("symbiont.remediation", agent, {"action", action}, timeout)

  defp await_payload(topic, agent, {key, value} = want, timeout) do
    receive do
      %Symbiont.Event{topic: ^topic, from: ^agent} = e ->
        case Symbiont.Event.decode!(e) do
          %{^key => ^value} = payload -> payload
          _ -> await_payload(topic, agent, want, timeout)
        end
    after
      timeout -> flunk("no #{key} #{value} on #{topic} from #{agent}")
    end
  end

  def os_alive?(os_pid), do: Symbiont.Host.Reaper.alive?(os_pid)

  @doc "Kills the BEAM process `pid` and waits (bounded) until it is gone."
  def kill!(pid, timeout \\ 1_000) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}, timeout
    :ok
  end

  @doc """
  Starts a task that publishes `value.(n)` on `topic` every `every_ms` ms, n = 0, 1, ...
  (load for a test), until `stop_publishing/1`.
  """
  def start_publishing(topic, every_ms, value \\ & &1),
    do: Task.async(fn -> publish_until_stopped(topic, every_ms, value, 0) end)

  @doc "Stops a `start_publishing/3` task; returns how many events it published."
  def stop_publishing(%Task{pid: pid} = task) do
    send(pid, :stop)
    Task.await(task)
  end

  defp publish_until_stopped(topic, every_ms, value, n) do
    receive do
      :stop -> n
    after
      every_ms ->
        :ok = Symbiont.publish(topic, value.(n))
        publish_until_stopped(topic, every_ms, value, n + 1)
    end
  end

  @doc """
  Starts a `Symbiont.Manifest` of the test's own (its agents only) under the test
  supervisor, with `agents` (manifest entries) and manifest `opts`; returns its name.
  Its agents and hosts are stopped when the test ends.
  """
  def start_manifest!(agents, opts \\ []) do
    {:ok, specs} = Symbiont.Manifest.validate(agents)
    name = :"manifest_#{System.unique_integer([:positive])}"
    prefix = Keyword.get_lazy(opts, :wasm_hosts, fn -> unique_name("wasm") end)
    opts = Keyword.merge([name: name, agents: specs, wasm_hosts: prefix], opts)
    ExUnit.Callbacks.start_supervised!({Symbiont.Manifest, opts}, id: name)
    names = Enum.map(specs, & &1.name)

    ExUnit.Callbacks.on_exit(fn ->
      for id <- Symbiont.Agent.Server.ids(), Symbiont.Manifest.agent_name(id) in names do
        Symbiont.Python.stop(id)

        with pid when is_pid(pid) <- Symbiont.Agent.Server.whereis(id),
             do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)
      end

      for i <- 1..4, do: Symbiont.Python.stop("#{prefix}##{i}")
    end)

    name
  end

  @doc """
  Starts a `Symbiont.Conductor` of the test's own under the test supervisor, watching
  the agents whose names start with `prefix`, acting through `manifest`, with its own
  policy host (stopped when the test ends) and the fixtures on its Python path; `opts`
  (`:tick_ms`, `:cooldown_ms`, `:policy_options`...) go on top. Returns its name.
  """
  def start_scoped_conductor!(prefix, manifest, opts) do
    name = :"conductor_#{System.unique_integer([:positive])}"
    policy_host = Keyword.get_lazy(opts, :policy_host, fn -> unique_name("policy") end)

    opts =
      Keyword.merge(
        [
          name: name,
          manifest: manifest,
          policy_host: policy_host,
          python_path: [fixtures()],
          scope: &String.starts_with?(&1, prefix)
        ],
        opts
      )

    ExUnit.Callbacks.start_supervised!({Symbiont.Conductor, opts}, id: name)
    ExUnit.Callbacks.on_exit(fn -> Symbiont.Python.stop(policy_host) end)
    name
  end

  @doc "Waits (30 s at most) until conductor `c` has run `n` more ticks."
  def await_ticks(c, n) do
    target = Symbiont.Conductor.info(c).ticks + n

    unless wait_until(fn -> Symbiont.Conductor.info(c).ticks >= target end, 30_000),
      do:
        raise(ExUnit.AssertionError,
          message: "conductor #{inspect(c)}: #{n} ticks did not come in 30 s"
        )
  end
end

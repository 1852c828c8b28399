defmodule Symbiont.StartFailureTest do
  # Agents that cannot start, on real hosts: refused at once by spawn_agent, deploy and
  # reload (checked in a Python process of their own); caught at node start (a required
  # one stops the node, another is quarantined); and at run time quarantined after
  # :max_start_failures failed starts, said once, trying no more. Not async: it turns the
  # warm standby pool off (a standby imports an agent's module ahead, so a module removed
  # later would still be there in it).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  doctest Symbiont.Agent.StartFailures

  alias Symbiont.Agent.Server
  alias Symbiont.Manifest

  @wasm Path.expand("../../priv/wasm", __DIR__)

  setup do
    env =
      for key <- [:python_path, :standby_hosts], do: {key, Application.get_env(:symbiont, key)}

    Application.put_env(:symbiont, :python_path, [fixtures()])
    Application.put_env(:symbiont, :standby_hosts, 0)

    on_exit(fn ->
      for {key, value} <- env,
          do:
            if(value == nil,
              do: Application.delete_env(:symbiont, key),
              else: Application.put_env(:symbiont, key, value)
            )
    end)

    :ok = Symbiont.subscribe(Symbiont.Health.topic())
    dir = Path.join(System.tmp_dir!(), unique_name("start-failure"))
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, dir: dir}
  end

  defp lines(log, text), do: log |> String.split("\n") |> Enum.count(&String.contains?(&1, text))

  # A module of its own (deleted or changed by a test) with an agent counting `topic`.
  defp write_module!(dir, top \\ "") do
    module = "mod_#{System.unique_integer([:positive])}"

    File.write!(Path.join(dir, module <> ".py"), """
    import os
    from symbiont import Agent
    #{top}

    class Counted(Agent):
        def subscriptions(self):
            return [self.config["in"]]

        def handle_event(self, topic, payload):
            self.state["n"] = self.state.get("n", 0) + 1
    """)

    {module, Path.join(dir, module <> ".py")}
  end

  test "spawn_agent refuses at once an agent that cannot start, naming it and the exception" do
    refused = [
      {"nosuch:Thing",
       "nosuch:Thing cannot start: ModuleNotFoundError: No module named 'nosuch'"},
      {"sample_agents:NoSuchClass",
       "sample_agents:NoSuchClass cannot start: AttributeError: module 'sample_agents' has no attribute 'NoSuchClass'"},
      {"sample_agents:BrokenInit",
       "sample_agents:BrokenInit cannot start: RuntimeError: no database configured (at sample_agents.py:"},
      {"sample_agents:NotAnAgent",
       "sample_agents:NotAnAgent cannot start: TypeError: sample_agents.NotAnAgent is not a subclass of symbiont.Agent"}
    ]

    for {python, want} <- refused do
      name = unique_name("ghost")

      assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
               Symbiont.spawn_agent(name: name, python: python)

      assert message =~ ~s(agent "#{name}": #{want})
      # Nothing of it runs, and the manifest does not know it.
      assert Manifest.agent(name) == nil
      assert Server.whereis(name) == nil
      assert Symbiont.Host.whereis(name) == nil
    end

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Symbiont.spawn_agent(name: "ghost2", python: "nosuch:Thing", required: false)

    assert message =~ ~s(agent "ghost2": nosuch:Thing cannot start: ModuleNotFoundError)
    assert Manifest.agent("ghost2") == nil

    # One that can start does, through the same call.
    name = unique_name("fine")
    attach_host_events(name)
    in_topic = unique_name("fine.in")

    assert {:ok, ^name} =
             Symbiont.spawn_agent(
               name: name,
               python: "sample_agents:GatedStart",
               config: %{"gate" => "/nonexistent/gate", "in" => in_topic}
             )

    on_exit(fn -> Symbiont.retire(name) end)
    assert_receive {:agent_start, ^name, _}, 10_000
  end

  test "Python.start with agent: checks it with the instance's own options", %{dir: dir} do
    # Not on the application's python_path: only on the instance's.
    Application.put_env(:symbiont, :python_path, [])
    {module, _path} = write_module!(dir)
    broken = unique_name("py-broken")

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Symbiont.Python.start(
               name: broken,
               python_path: [fixtures()],
               agent: [name: broken, python: "sample_agents:BrokenInit"]
             )

    assert message =~ ~s(agent "#{broken}": sample_agents:BrokenInit cannot start: RuntimeError)
    assert Symbiont.Host.whereis(broken) == nil and Server.whereis(broken) == nil

    fine = unique_name("py-fine")
    attach_host_events(fine)
    agent = [name: fine, python: "#{module}:Counted", config: %{"in" => unique_name("in")}]
    assert {:ok, _} = Symbiont.Python.start(name: fine, python_path: [dir], agent: agent)
    on_exit(fn -> Symbiont.Python.stop(fine) end)
    assert_receive {:agent_start, ^fine, _}, 10_000
  end

  test "spawn_agent refuses a Wasm module that does not load or does not fit the ABI", %{
    dir: dir
  } do
    garbage = Path.join(dir, "garbage.wasm")
    File.write!(garbage, "\x01" <> :crypto.strong_rand_bytes(1024))
    no_abi = Path.join(dir, "no_abi.wat")
    File.write!(no_abi, ~s[(module (memory (export "memory") 1))])

    for {path, want} <- [
          {garbage, "is neither a Wasm binary nor WAT text"},
          {no_abi, "does not export symbiont_abi_version, symbiont_alloc, symbiont_handle"}
        ] do
      name = unique_name("wghost")

      assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
               Symbiont.spawn_agent(name: name, wasm: path, topics: ["t"])

      assert message =~ ~s(agent "#{name}": the :wasm module "#{path}" cannot start: )
      assert message =~ want
      assert Manifest.agent(name) == nil
      assert Server.whereis(name) == nil
    end
  end

  test "a check is bounded: an import that hangs or kills its process fails, the others are checked",
       %{dir: dir} do
    Application.put_env(:symbiont, :python_path, [fixtures(), dir])
    previous = Application.get_env(:symbiont, :probe_timeout_ms)
    Application.put_env(:symbiont, :probe_timeout_ms, 2_000)

    on_exit(fn ->
      if previous,
        do: Application.put_env(:symbiont, :probe_timeout_ms, previous),
        else: Application.delete_env(:symbiont, :probe_timeout_ms)
    end)

    {hangs, _} = write_module!(dir, "import time\ntime.sleep(3600)")
    {exits, _} = write_module!(dir, "os._exit(7)")

    {:ok, specs} =
      Manifest.validate([
        [name: "hangs", python: "#{hangs}:Counted"],
        [name: "exits", python: "#{exits}:Counted"],
        [name: "fine", python: "sample_agents:Counter"]
      ])

    # The probe's own process crashed and was restarted: its host says so, as any host.
    log = capture_log(fn -> send(self(), Symbiont.Agent.Probe.check_all(specs)) end)
    assert log =~ ~s(host "probe:)
    assert_received %{"hangs" => {:error, hung}, "exits" => {:error, exited}, "fine" => :ok}

    assert hung.message ==
             ~s(agent "hangs": #{hangs}:Counted cannot start: its check did not finish within 2000 ms ) <>
               "(:probe_timeout_ms): its module's import or its class's __init__ did not return"

    assert exited.message ==
             ~s(agent "exits": #{exits}:Counted cannot start: it killed the Python process that checked it: exited with status 7)

    Application.put_env(:symbiont, :probe_timeout_ms, 0)

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Symbiont.Agent.Probe.check(hd(specs))

    assert message =~ "expected :probe_timeout_ms in config :symbiont to be a positive integer"
  end

  test "deploy of a module that cannot start is refused, and no canary starts", %{dir: dir} do
    name = unique_name("dep")
    topic = unique_name("dep.in")
    agent = [name: name, wasm: Path.join(@wasm, "counter.wat"), topics: [topic]]
    start_host!(name: name, agent: agent)

    garbage = Path.join(dir, "v2.wasm")
    File.write!(garbage, "\x01" <> :crypto.strong_rand_bytes(4096))

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Symbiont.deploy(name, garbage)

    assert message =~
             ~s(agent "#{name}": the :wasm module "#{garbage}" cannot start: load: #{garbage} is neither a Wasm binary nor WAT text)

    # A module whose symbiont_init traps: it compiles and fits the ABI, but cannot start.
    init_traps = Path.join(dir, "init_traps.wat")

    File.write!(init_traps, """
    (module
      (memory (export "memory") 1)
      (func (export "symbiont_abi_version") (result i32) (i32.const 1))
      (func (export "symbiont_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "symbiont_handle") (param i32 i32) (result i64) (i64.const 0))
      (func (export "symbiont_init") (param i32 i32) (unreachable)))
    """)

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Symbiont.deploy(name, init_traps)

    assert message =~ ~s(agent "#{name}": the :wasm module "#{init_traps}" cannot start: trap: )

    assert Server.whereis(name <> "#canary") == nil
    assert Symbiont.Host.whereis(name <> "#canary") == nil
    assert Symbiont.Deploy.history(name) == []
    assert {:ok, %{status: :ready, python: "wasm:" <> path}} = Server.info(name)
    assert Path.basename(path) == "counter.wat"
  end

  test "reload refuses new or changed agents that cannot start, and changes nothing" do
    a = unique_name("rl")
    attach_host_events(a)
    spec_a = [name: a, python: "sample_agents:Counter", config: %{"in" => unique_name("rl.in")}]
    m = start_manifest!([spec_a])
    assert_receive {:agent_start, ^a, _}, 10_000

    b = unique_name("rl-new")

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Manifest.reload([spec_a, [name: b, python: "nosuch_b:B"]], m)

    assert message =~ ~s(agent "#{b}": nosuch_b:B cannot start: ModuleNotFoundError)
    assert message =~ "nothing was changed"

    changed = Keyword.put(spec_a, :python, "sample_agents:BrokenInit")

    assert {:error, %Symbiont.Error{reason: :cannot_start, message: message}} =
             Manifest.reload([changed], m)

    assert message =~ ~s(agent "#{a}": sample_agents:BrokenInit cannot start: RuntimeError)

    assert [%{name: ^a, module: "sample_agents", class: "Counter"}] = Manifest.agents(m)
    assert Server.whereis(b) == nil
    assert {:ok, %{status: :ready, python: "sample_agents:Counter"}} = Server.info(a)
  end

  describe "at node start" do
    test "a required agent that cannot start stops the manifest before anything starts" do
      good = unique_name("good")
      bad = unique_name("bad")

      {:ok, specs} =
        Manifest.validate([
          [name: good, python: "sample_agents:Counter", config: %{"in" => unique_name("g.in")}],
          [name: bad, python: "sample_agents:BrokenInit"]
        ])

      name = :"manifest_#{System.unique_integer([:positive])}"

      log =
        capture_log(fn ->
          assert {:error, {{:agent_cannot_start, message}, _}} =
                   start_supervised({Manifest, name: name, agents: specs, check: true})

          assert message =~
                   ~s(agent "#{bad}": sample_agents:BrokenInit cannot start: RuntimeError: no database configured)
        end)

      # Said once, with the traceback and what it means.
      assert lines(log, ~s(agent "#{bad}": sample_agents:BrokenInit cannot start)) == 1
      assert lines(log, "Traceback (most recent call last)") == 1
      assert log =~ "it is :required, so the node does not start"
      assert log =~ ~s[raise RuntimeError("no database configured")]
      # Nothing started, the good agent neither.
      for id <- [good, bad],
          do: assert(Server.whereis(id) == nil and Symbiont.Host.whereis(id) == nil)
    end

    test "an agent that is not required and cannot start is quarantined at once; the rest serve" do
      good = unique_name("good")
      bad = unique_name("bad")
      attach_host_events(good)
      attach_host_events(bad)

      {:ok, specs} =
        Manifest.validate([
          [name: good, python: "sample_agents:Counter", config: %{"in" => unique_name("g.in")}],
          [name: bad, python: "nosuch_mod:Bad", required: false]
        ])

      log =
        capture_log(fn ->
          start_manifest!(specs, check: true)
          assert_receive {:agent_start, ^good, _}, 10_000
          assert %{"reason" => reason} = await_health(bad, "quarantined")
          assert reason =~ ~s(agent "#{bad}": nosuch_mod:Bad cannot start: ModuleNotFoundError)
        end)

      assert lines(log, ~s(agent "#{bad}": nosuch_mod:Bad cannot start)) == 1

      assert log =~
               ~s[it is quarantined; Symbiont.Agent.Server.release("#{bad}") starts it once fixed]

      assert {:ok, %{status: :detached, quarantined: "agent " <> _}} = Server.info(bad)
      # It never tried to start.
      refute_received {:agent_start, ^bad, _}
      refute_received %Symbiont.Event{topic: "symbiont.health", from: ^bad}
    end

    test "restarted by its supervisor, the manifest quarantines a required agent rather than stop",
         %{dir: dir} do
      {module, path} = write_module!(dir)
      name = unique_name("req")
      attach_host_events(name)
      spec = [name: name, python: "#{module}:Counted", config: %{"in" => unique_name("req.in")}]
      Application.put_env(:symbiont, :python_path, [fixtures(), dir])
      m = start_manifest!([spec], check: true)
      assert_receive {:agent_start, ^name, _}, 10_000
      pid = Process.whereis(m)

      log =
        capture_log(fn ->
          File.rm!(path)
          kill!(pid)
          assert wait_until(fn -> Process.whereis(m) not in [nil, pid] end, 5_000)
          # Its next init has checked (and logged) before it answers.
          assert [%{name: ^name}] = Manifest.agents(m)
        end)

      assert log =~ ~s(agent "#{name}": #{module}:Counted cannot start: ModuleNotFoundError)
      assert log =~ "it is quarantined"
      refute log =~ "the node does not start"
    end

    test "restarted with its supervisor (the same :boot), the manifest quarantines a required agent rather than stop",
         %{dir: dir} do
      {module, path} = write_module!(dir)
      name = unique_name("boot")
      attach_host_events(name)
      spec = [name: name, python: "#{module}:Counted", config: %{"in" => unique_name("boot.in")}]
      Application.put_env(:symbiont, :python_path, [fixtures(), dir])
      {:ok, specs} = Manifest.validate([spec])
      m = :"manifest_#{System.unique_integer([:positive])}"
      boot = make_ref()

      # A supervisor of its own, started again as a new process: as Symbiont.Control,
      # the application's manifest's, is when the runtime restarts.
      group = %{
        id: m,
        type: :supervisor,
        start:
          {Supervisor, :start_link,
           [
             [{Manifest, name: m, agents: specs, check: true, boot: boot}],
             [strategy: :one_for_one]
           ]}
      }

      on_exit(fn ->
        Symbiont.Python.stop(name)

        with pid when is_pid(pid) <- Server.whereis(name),
             do: DynamicSupervisor.terminate_child(Symbiont.Agents, pid)
      end)

      start_supervised!(group)
      assert_receive {:agent_start, ^name, _}, 10_000

      log =
        capture_log(fn ->
          File.rm!(path)
          :ok = stop_supervised(m)
          start_supervised!(group)
          # Its init has checked (and logged) before it answers.
          assert [%{name: ^name}] = Manifest.agents(m)
        end)

      assert log =~ ~s(agent "#{name}": #{module}:Counted cannot start: ModuleNotFoundError)
      assert log =~ "it is quarantined"
      refute log =~ "the node does not start"
    end

    test "a node whose manifest has a required agent that cannot start does not start" do
      bad = unique_name("bad")
      agents = [[name: bad, python: "nosuch_mod:Bad"]]

      {_peer, node} =
        Symbiont.Cluster.start_peer!("badstart",
          env: [agents: agents, python_path: [fixtures()], standby_hosts: 0],
          start: false
        )

      # Its log is this node's output: the test below reads the same lines here.
      :ok = :erpc.call(node, Application, :put_env, [:logger, :level, :none])
      :ok = :erpc.call(node, :logger, :set_primary_config, [:level, :none])

      assert {:error, {:symbiont, {{:agent_cannot_start, message}, _}}} =
               :erpc.call(node, Application, :ensure_all_started, [:symbiont])

      assert message =~ ~s(agent "#{bad}": nosuch_mod:Bad cannot start: ModuleNotFoundError)
      # Nothing of Symbiont runs there.
      refute :erpc.call(node, Process, :whereis, [Symbiont.Supervisor])

      # Not required: the node starts, the agent quarantined.
      agents = [[name: bad, python: "nosuch_mod:Bad", required: false]]
      :ok = :erpc.call(node, Application, :put_env, [:symbiont, :agents, agents])
      assert {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:symbiont])

      assert {:ok, %{quarantined: "agent " <> _, status: :detached}} =
               :erpc.call(node, Server, :info, [bad])
    end
  end

  test "an agent whose module is gone after it started: quarantined after :max_start_failures, said once, no more tries",
       %{dir: dir} do
    {module, path} = write_module!(dir)
    name = unique_name("gone")
    topic = unique_name("gone.in")

    %{os_pid: os_pid} =
      start_host!(
        name: name,
        python_path: [dir],
        agent: [
          name: name,
          python: "#{module}:Counted",
          config: %{"in" => topic},
          max_start_failures: 3
        ]
      )

    log =
      capture_log(fn ->
        File.rm!(path)
        Symbiont.Host.Reaper.kill(os_pid)

        # Failing from its first failed start (the retries that fail too are no news: a
        # health event is a change), then quarantined.
        assert %{"metrics" => %{"failures" => 1}} = await_health(name, "failing")
        assert_receive %Symbiont.Event{topic: "symbiont.health", from: ^name} = next, 10_000
        assert %{"kind" => "quarantined", "reason" => reason} = Symbiont.Event.decode!(next)

        assert reason ==
                 "could not start 3 times in a row: ModuleNotFoundError: No module named '#{module}'"

        # No more tries: the next would have come within 400 ms.
        refute_receive %Symbiont.Event{topic: "symbiont.health", from: ^name}, 1_500
      end)

    assert {:ok, %{status: :detached, start_failures: 3, quarantined: "could not start 3" <> _}} =
             Server.info(name)

    # The first failure once (not the retries), the quarantine once with the traceback.
    assert lines(log, "agent #{name} could not start in host") == 1
    assert lines(log, "agent #{name} quarantined: could not start 3 times in a row") == 1
    assert lines(log, "Traceback (most recent call last)") == 1

    # Fixed, and released: it starts again, from its state, and serves.
    write_module_at!(path, module)
    :ok = Server.release(name)
    assert_receive {:agent_start, ^name, _}, 10_000
    :ok = Symbiont.publish(topic, 1)

    assert wait_until(fn -> match?({:ok, %{handled: 1, start_failures: 0}}, Server.info(name)) end)
  end

  test "a host process that dies as a Python agent starts counts as a failed start", %{dir: dir} do
    marker = Path.join(dir, "exit-on-import")
    {module, _path} = write_module!(dir, "if os.path.exists(#{inspect(marker)}): os._exit(7)")
    name = unique_name("exits")

    %{os_pid: os_pid} =
      start_host!(
        name: name,
        python_path: [dir],
        agent: [
          name: name,
          python: "#{module}:Counted",
          config: %{"in" => unique_name("exits.in")},
          max_start_failures: 3
        ]
      )

    capture_log(fn ->
      File.write!(marker, "")
      Symbiont.Host.Reaper.kill(os_pid)
      assert %{"reason" => reason} = await_health(name, "quarantined")

      assert reason =~
               "could not start 3 times in a row: HostDown: its host process exited with status 7"

      # The kill, then the exits at import (each crash is told before its agent hears of
      # it); then its host no longer crashes: it runs nothing that imports the module.
      assert crashes(name) == [7, 137]
      refute_receive {:host_crash, ^name, _}, 1_000
    end)
  end

  test "on_start raising again and again: quarantined after :max_start_failures; release tries afresh",
       %{dir: dir} do
    gate = Path.join(dir, "gate")
    File.write!(gate, "closed")
    name = unique_name("gated")
    attach_host_events(name)
    host = start_host!(name: unique_name("gated-host"))
    spec = [name: name, python: "sample_agents:GatedStart", max_start_failures: 2]
    config = %{"gate" => gate, "in" => unique_name("gated.in")}
    child = {Server, [id: name, host: host.name, config: config] ++ spec}

    capture_log(fn ->
      start_supervised!(child, id: name)

      assert %{"reason" => "could not start 2 times in a row: ConnectionError: gate " <> _} =
               await_health(name, "quarantined")

      File.rm!(gate)
      :ok = Server.release(name)
      assert_receive {:agent_start, ^name, _}, 10_000
    end)

    assert {:ok, %{status: :ready, quarantined: nil, start_failures: 0}} = Server.info(name)
  end

  # The exit statuses of the crashes of host `name` told so far, sorted, once each.
  defp crashes(name, seen \\ []) do
    receive do
      {:host_crash, ^name, %{status: status}} -> crashes(name, [status | seen])
    after
      0 -> seen |> Enum.uniq() |> Enum.sort()
    end
  end

  defp write_module_at!(path, _module) do
    File.write!(path, """
    from symbiont import Agent

    class Counted(Agent):
        def subscriptions(self):
            return [self.config["in"]]

        def handle_event(self, topic, payload):
            self.state["n"] = self.state.get("n", 0) + 1
    """)
  end
end

defmodule Symbiont.SupervisionTest do
  # The supervision tree of the running application (lib/symbiont/application.ex: the
  # core, then the groups Symbiont.Stores, Symbiont.Runtime, Symbiont.Control): its shape,
  # and what a crash of one part restarts and what it leaves alone. Not async: it kills
  # parts of the application's tree; each test waits until the whole tree runs again.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog, only: [with_log: 1]
  import Symbiont.HostHelpers

  alias Symbiont.{Control, Runtime, Stores}

  @root Symbiont.Supervisor
  @core [
    Symbiont.Telemetry,
    Symbiont.Host.Registry,
    Symbiont.Agent.Registry,
    Symbiont.Instances,
    Symbiont.Observation,
    {Symbiont.Mesh, Symbiont.Mesh},
    Symbiont.TaskSupervisor
  ]
  @groups [Stores, Runtime, Control]

  # The names the rest of Symbiont calls.
  @names [
    Symbiont.Supervisor,
    Symbiont.Telemetry,
    Symbiont.Host.Registry,
    Symbiont.Agent.Registry,
    Symbiont.Instances,
    Symbiont.Observation,
    Symbiont.TaskSupervisor,
    Symbiont.Conductor.Audit,
    Symbiont.Health.History,
    Symbiont.Host.Standby,
    Symbiont.Hosts,
    Symbiont.Agents,
    Symbiont.Deploy,
    Symbiont.Manifest
  ]

  @restart_ms 10_000

  setup do
    await_tree!()
    on_exit(&await_tree!/0)
    :ok
  end

  # Every child of the root and of each group (key: {supervisor, child id}), with its
  # pid; a group's key is {Symbiont.Supervisor, group}.
  defp tree do
    for group <- [@root | @groups], reduce: %{} do
      acc ->
        children =
          for {id, pid, _, _} <- Supervisor.which_children(group),
              into: %{},
              do: {{group, id}, pid}

        Map.merge(acc, children)
    end
  end

  # The whole tree runs: each group, each child, each name.
  defp up? do
    Enum.all?(Map.values(tree()), &is_pid/1) and
      Enum.all?(@names, &is_pid(Process.whereis(&1)))
  catch
    # A group that is restarting.
    :exit, _ -> false
  end

  defp await_tree! do
    assert wait_until(&up?/0, @restart_ms), "the supervision tree did not come back"
  end

  # Waits until the whole tree runs again with a new process at `key`; returns the tree.
  defp await_restart!(before, key) do
    assert wait_until(fn -> up?() and Map.get(tree(), key) != before[key] end, @restart_ms),
           "#{inspect(key)} was not restarted"

    tree()
  end

  # Kills the process at `key` of `before` (the tree) and waits until the whole tree runs
  # again with a new process at `awaited`, and until the `hosts` ({name, os pid}) that
  # went with it are gone, Python processes included (the owner of a host outlives a
  # supervisor killed outright for a moment, as it stops); returns the tree. What the
  # crash logs (the supervisors' reports, the hosts that stop) is kept out of the output.
  defp crash!(before, key, awaited \\ nil, hosts \\ []) do
    {now, _log} =
      with_log(fn ->
        kill!(before[key])
        now = await_restart!(before, awaited || key)

        for {name, os_pid} <- hosts do
          assert wait_until(
                   fn -> Symbiont.Host.whereis(name) == nil and not os_alive?(os_pid) end,
                   5_000
                 ),
                 "host #{name} (os pid #{os_pid}) outlived the crash"
        end

        now
      end)

    now
  end

  # The keys whose process is not the one it was.
  defp restarted(before, now), do: for({key, pid} <- now, before[key] != pid, do: key)

  # A supervisor's children's ids, in the order it starts them (which_children lists the
  # last started first).
  defp ids(sup),
    do: sup |> Supervisor.which_children() |> Enum.map(&elem(&1, 0)) |> Enum.reverse()

  defp audited(agent), do: Enum.find(Symbiont.remediations(1_000), &(&1["agent"] == agent))

  # The Python process of a new host under Symbiont.Hosts (the application's, not the
  # test's supervisor).
  defp python!(name) do
    {:ok, _} = Symbiont.Python.start(name: name)
    {:ok, os_pid} = Symbiont.Python.call(name, "os", "getpid", [], timeout: 10_000)
    os_pid
  end

  test "the core, then three groups, each in the order of what it needs" do
    assert ids(@root) == @core ++ @groups

    assert ids(Stores) == [
             Symbiont.Conductor.Audit,
             Symbiont.Health.History,
             Symbiont.Host.Standby
           ]

    assert ids(Runtime) == [Symbiont.Hosts, Symbiont.Agents]

    # The conductor and the page as configured (config/test.exs turns both off).
    conductor? = Keyword.get(Application.get_env(:symbiont, :conductor, []), :enabled, true)
    page? = is_list(Application.get_env(:symbiont, :status_page))

    assert ids(Control) ==
             [Symbiont.Deploy, Symbiont.Manifest] ++
               if(conductor?, do: [Symbiont.Conductor], else: []) ++
               if(page?, do: [Symbiont.StatusPage], else: [])

    for {id, _, type, _} <- Supervisor.which_children(@root),
        id in @groups,
        do: assert(type == :supervisor)

    for {id, _, type, _} <- Supervisor.which_children(Runtime),
        do: assert(type == :supervisor, "#{inspect(id)} is a supervisor")
  end

  test "a crash of the manifest restarts it alone: the audit trail, the core, the runtime stay" do
    agent = unique_name("audited")
    :ok = Symbiont.Remediation.publish("restart", agent, "by hand, before", by: "operator")
    assert wait_until(fn -> audited(agent) != nil end)

    before = tree()
    manifest = {Control, Symbiont.Manifest}
    now = crash!(before, manifest)

    assert restarted(before, now) == [manifest]
    assert now[{Stores, Symbiont.Conductor.Audit}] == Process.whereis(Symbiont.Conductor.Audit)
    assert %{"by" => "operator", "reason" => "by hand, before"} = audited(agent)
    # The new one serves.
    assert is_list(Symbiont.Manifest.agents())
  end

  test "a crash of the conductor restarts it alone, not the manifest" do
    # config/test.exs turns the application's conductor off: one is added to the
    # application's control group here, as it would be there (healing nothing).
    conductor =
      if Process.whereis(Symbiont.Conductor) do
        Symbiont.Conductor
      else
        name = :"conductor_#{System.unique_integer([:positive])}"
        policy_host = unique_name("policy")
        opts = [name: name, tick_ms: 600_000, policy_host: policy_host, scope: fn _ -> false end]
        {:ok, _} = Supervisor.start_child(Control, {Symbiont.Conductor, opts})

        on_exit(fn ->
          Supervisor.terminate_child(Control, name)
          Supervisor.delete_child(Control, name)
          Symbiont.Python.stop(policy_host)
        end)

        name
      end

    before = tree()
    key = {Control, conductor}
    assert is_pid(before[key])
    now = crash!(before, key)

    assert restarted(before, now) == [key]
    assert now[{Control, Symbiont.Manifest}] == before[{Control, Symbiont.Manifest}]
    assert %{ticks: _} = Symbiont.Conductor.info(conductor)
  end

  test "a crash of the hosts supervisor restarts the runtime and control; stores and core stay" do
    agent = unique_name("audited")
    :ok = Symbiont.Remediation.publish("restart", agent, "by hand, before", by: "operator")
    assert wait_until(fn -> audited(agent) != nil end)
    host = unique_name("doomed")
    os_pid = python!(host)

    before = tree()
    hosts = {Runtime, Symbiont.Hosts}
    now = crash!(before, hosts, {Control, Symbiont.Manifest}, [{host, os_pid}])

    # The runtime whole, and control after it (a new manifest, which starts the agents of
    # the manifest again).
    control = for {{Control, _} = key, _} <- before, do: key

    assert Enum.sort(restarted(before, now)) ==
             Enum.sort(
               [{@root, Runtime}, hosts, {Runtime, Symbiont.Agents}, {@root, Control}] ++ control
             )

    assert now[{Stores, Symbiont.Conductor.Audit}] == before[{Stores, Symbiont.Conductor.Audit}]
    assert %{"by" => "operator"} = audited(agent)

    # Its hosts went with it (crash!/4 waited); a new host starts under the new supervisor.
    fresh = unique_name("fresh")
    assert is_integer(python!(fresh))
    assert :ok = Symbiont.Python.stop(fresh)
  end

  test "a crash in the core restarts what is after it: the groups whole, no host left behind" do
    host = unique_name("observed")
    os_pid = python!(host)

    before = tree()
    # A worker of the core (killing a Registry's supervisor outright would leave its
    # partition registered for a moment, and its restart refused: not what a crash is).
    observation = {@root, Symbiont.Observation}
    now = crash!(before, observation, {Control, Symbiont.Manifest}, [{host, os_pid}])

    # The core before it stays; it, the core after it, and every group are new.
    [_ | after_it] = Enum.drop_while(@core, &(&1 != Symbiont.Observation))
    groups = for group <- @groups, do: {@root, group}
    in_groups = for {{sup, _} = key, _} <- before, sup in @groups, do: key
    after_it = for id <- after_it, do: {@root, id}

    assert Enum.sort(restarted(before, now)) ==
             Enum.sort([observation] ++ after_it ++ groups ++ in_groups)

    # Its hosts went with the runtime (crash!/4 waited); a new host starts and registers.
    fresh = unique_name("fresh")
    assert is_integer(python!(fresh))
    assert is_pid(Symbiont.Host.whereis(fresh))
    assert :ok = Symbiont.Python.stop(fresh)
  end
end

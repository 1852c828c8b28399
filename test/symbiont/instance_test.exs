defmodule Symbiont.InstanceTest do
  # Symbiont inside an application: `{Symbiont, name: ..., agents: ...}` children side by
  # side, on real hosts. Not async: the manifests' hosts read the app's python_path.
  use ExUnit.Case, async: false
  import Symbiont.HostHelpers

  alias Symbiont.{Instance, Manifest}

  doctest Symbiont.Instance

  setup do
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, [fixtures()])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    :ok
  end

  defp counter(name, topic, out),
    do: [name: name, python: "sample_agents:Counter", config: %{"in" => topic, "out" => out}]

  defp count(topic, out) do
    :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, out)
    :ok = Symbiont.publish(topic, "x")
    assert_receive %Symbiont.Event{topic: ^out} = event, 10_000
    {:ok, %{"n" => n}} = Symbiont.Event.decode(event)
    n
  end

  test "two instances side by side, each with its agents and its own conductor" do
    [a, b] = for s <- ~w(a b), do: unique_name("inst-#{s}")
    [ta, tb] = for n <- [a, b], do: {n <> ".in", n <> ".out"}
    for id <- [a, b], do: attach_host_events(id)

    start_supervised!(
      {Symbiont,
       name: InstA, agents: [counter(a, elem(ta, 0), elem(ta, 1))], conductor: [tick_ms: 60_000]}
    )

    start_supervised!(
      {Symbiont,
       name: InstB, agents: [counter(b, elem(tb, 0), elem(tb, 1))], conductor: [tick_ms: 60_000]}
    )

    assert InstA in Instance.list() and InstB in Instance.list()

    # Each serves.
    for id <- [a, b], do: assert_receive({:agent_start, ^id, _}, 10_000)
    assert count(elem(ta, 0), elem(ta, 1)) == 1
    assert count(elem(tb, 0), elem(tb, 1)) == 1

    # Names scoped by the instance's name.
    assert [%{name: ^a}] = Manifest.agents(Instance.manifest(InstA))
    assert [%{name: ^b}] = Manifest.agents(Instance.manifest(InstB))
    assert Instance.owner(a) == InstA and Instance.owner(b) == InstB

    # Each conductor sees its own agents only; the node's sees neither.
    names = fn inst ->
      for ag <- Symbiont.Conductor.snapshot(Instance.conductor(inst))["agents"], do: ag["name"]
    end

    assert names.(InstA) == [a]
    assert names.(InstB) == [b]
    refute Instance.unowned?(a)

    # The iex helpers act in the instance that runs the agent.
    assert :ok = Symbiont.scale(a, 2)
    assert %{replicas: 2} = Manifest.agent(a, Instance.manifest(InstA))
    Symbiont.unpin(a)
  end

  test "an agent name is run by one instance at a time" do
    a = unique_name("inst-dup")
    spec = counter(a, a <> ".in", a <> ".out")
    start_supervised!({Symbiont, name: InstDup1, agents: [spec], conductor: false})
    # As a supervisor does: a child that cannot start exits its start_link's caller.
    Process.flag(:trap_exit, true)

    assert {:error, %Symbiont.Error{reason: :conflict, message: message}} =
             Instance.start_link(name: InstDup2, agents: [spec], conductor: false)

    assert message ==
             "agent #{inspect(a)} of instance InstDup2 is run by instance InstDup1 already; an agent name is run by one instance at a time"

    assert {:error,
            %Symbiont.Error{
              reason: :conflict,
              message: "agent #{inspect(a)} is already in the manifest",
              details: %{agent: a}
            }} ==
             Symbiont.spawn_agent([name: a, python: "sample_agents:Counter"], in: InstDup1)

    # A spawn into another instance of a taken name is refused the same way.
    start_supervised!({Symbiont, name: InstDup3, agents: [], conductor: false})

    assert {:error, %Symbiont.Error{reason: :conflict, message: m3}} =
             Symbiont.spawn_agent([name: a, python: "sample_agents:Counter"], in: InstDup3)

    assert m3 =~ "agent #{inspect(a)} of instance InstDup3 is run by instance InstDup1 already"

    # And the node's own manifest may not take it either.
    assert {:error, %Symbiont.Error{reason: :conflict, message: m4}} =
             Symbiont.spawn_agent(name: a, python: "sample_agents:Counter")

    assert m4 =~ "agent #{inspect(a)} of the node's own manifest is run by instance InstDup1"
  end

  test "an instance that stops takes its agents and their hosts with it" do
    a = unique_name("inst-stop")

    {:ok, sup} =
      Instance.start_link(
        name: InstStop,
        agents: [counter(a, a <> ".in", a <> ".out")],
        conductor: false
      )

    agent = Symbiont.Agent.Server.whereis(a)
    host = Symbiont.Host.whereis(a)
    assert is_pid(agent) and is_pid(host)
    refs = for pid <- [agent, host], do: Process.monitor(pid)

    Process.unlink(sup)
    :ok = Supervisor.stop(sup, :shutdown)

    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, _}, 10_000)
    assert Instance.owner(a) == nil
    refute InstStop in Instance.list()
  end

  test "bad options are named" do
    Process.flag(:trap_exit, true)

    assert {:error,
            %Symbiont.Error{
              reason: :invalid,
              message:
                "expected :name of a Symbiont instance to be an atom such as MyApp.Symbiont, got: \"x\""
            }} = Instance.start_link(name: "x")

    assert {:error,
            %Symbiont.Error{
              reason: :invalid,
              message:
                "expected :conductor of a Symbiont instance to be false or the conductor's options (a keyword list), got: true"
            }} = Instance.start_link(name: InstBad, conductor: true)

    assert {:error,
            %Symbiont.Error{
              reason: :invalid,
              message:
                "expected :port of the status page to be an integer from 0 to 65535 (0: any free port), got: -1"
            }} = Instance.start_link(name: InstBad, status_page: [port: -1])

    assert {:error, %Symbiont.Error{reason: :invalid, message: "expected agent :name" <> _}} =
             Instance.start_link(name: InstBad, agents: [[name: "a b", python: "m:A"]])

    assert {:error,
            %Symbiont.Error{
              reason: :cannot_start,
              message: "agent \"inst-ghost\": nosuch:Thing cannot start" <> _
            }} =
             Instance.start_link(
               name: InstBad,
               agents: [[name: "inst-ghost", python: "nosuch:Thing"]],
               conductor: false
             )

    refute InstBad in Instance.list()
    assert Instance.owner("inst-ghost") == nil
  end
end

defmodule Symbiont.MeshCases do
  @moduledoc false
  # The mesh test suite, run once per adapter:
  # `use Symbiont.MeshCases, adapter: Mod, tags: [...]`.
  # Every test starts its own mesh, so the suites run concurrently.

  defmacro __using__(opts) do
    quote location: :keep do
      use ExUnit.Case, async: true

      for tag <- unquote(Keyword.get(opts, :tags, [])), do: @moduletag(tag)

      import Symbiont.HostHelpers, only: [kill!: 1, wait_until: 1]

      alias Symbiont.Mesh

      @adapter unquote(Keyword.fetch!(opts, :adapter))

      defmodule CustomDispatcher do
        @moduledoc false
        def dispatch(entries, from, message) do
          for {pid, metadata} <- entries, do: send(pid, {:custom, metadata, from, message})
          :ok
        end
      end

      setup context do
        mesh = :"mesh_#{System.unique_integer([:positive])}"
        start_supervised!({Mesh, name: mesh, adapter: @adapter})
        {:ok, mesh: mesh, topic: "topic:#{context.line}"}
      end

      # A subscriber process that reports what it receives, tagged with its name.
      defp subscriber(mesh, topic, opts \\ [], tag \\ make_ref()) do
        parent = self()

        pid =
          spawn_link(fn ->
            :ok = Mesh.subscribe(mesh, topic, opts)
            send(parent, {:subscribed, self()})

            loop = fn loop ->
              receive(do: (msg -> send(parent, {tag, self(), msg}) && loop.(loop)))
            end

            loop.(loop)
          end)

        assert_receive {:subscribed, ^pid}
        {tag, pid}
      end

      defp received(tag, pid) do
        Stream.repeatedly(fn ->
          receive do
            {^tag, ^pid, msg} -> msg
          after
            0 -> :none
          end
        end)
        |> Enum.take_while(&(&1 != :none))
      end

      test "node_name/1 is this node", %{mesh: mesh} do
        assert Mesh.node_name(mesh) == node()
      end

      test "subscribe, broadcast, unsubscribe", %{mesh: mesh, topic: topic} do
        assert :ok = Mesh.subscribe(mesh, topic)
        assert :ok = Mesh.broadcast(mesh, topic, :ping)
        assert_receive :ping
        assert :ok = Mesh.broadcast!(mesh, topic, :ping!)
        assert_receive :ping!
        assert :ok = Mesh.unsubscribe(mesh, topic)
        assert :ok = Mesh.broadcast(mesh, topic, :gone)
        refute_receive :gone, 50
      end

      test "every plain subscriber gets every message, in order", %{mesh: mesh, topic: topic} do
        subs = for _ <- 1..5, do: subscriber(mesh, topic)
        for i <- 1..20, do: :ok = Mesh.broadcast(mesh, topic, i)
        # A second topic, to show that topics do not leak into each other.
        :ok = Mesh.broadcast(mesh, topic <> ":other", :nope)

        for {tag, pid} <- subs do
          for i <- 1..20, do: assert_receive({^tag, ^pid, ^i})
          # A :nope that leaked would be in its mailbox before this: once :done is back,
          # it would be here too.
          send(pid, :done)
          assert_receive {^tag, ^pid, :done}
          refute_received {^tag, ^pid, :nope}
        end
      end

      test "a double subscription delivers twice; unsubscribe drops both", %{
        mesh: mesh,
        topic: topic
      } do
        :ok = Mesh.subscribe(mesh, topic)
        :ok = Mesh.subscribe(mesh, topic)
        :ok = Mesh.broadcast(mesh, topic, :twice)
        assert_receive :twice
        assert_receive :twice
        :ok = Mesh.unsubscribe(mesh, topic)
        :ok = Mesh.broadcast(mesh, topic, :never)
        refute_receive :never, 50
      end

      test "broadcast_from and local_broadcast_from skip the sender", %{mesh: mesh, topic: topic} do
        {tag, other} = subscriber(mesh, topic)
        :ok = Mesh.subscribe(mesh, topic)
        :ok = Mesh.broadcast_from(mesh, self(), topic, :from)
        :ok = Mesh.broadcast_from!(mesh, self(), topic, :from!)
        :ok = Mesh.local_broadcast_from(mesh, self(), topic, :local_from)
        assert_receive {^tag, ^other, :from}
        assert_receive {^tag, ^other, :from!}
        assert_receive {^tag, ^other, :local_from}
        refute_receive :from, 50
        refute_received :from!
        refute_received :local_from
      end

      test "local_broadcast and direct_broadcast to this node", %{mesh: mesh, topic: topic} do
        :ok = Mesh.subscribe(mesh, topic)
        :ok = Mesh.local_broadcast(mesh, topic, :local)
        assert_receive :local
        :ok = Mesh.direct_broadcast(node(), mesh, topic, :direct)
        assert_receive :direct
        :ok = Mesh.direct_broadcast!(Mesh.node_name(mesh), mesh, topic, :direct!)
        assert_receive :direct!
      end

      test "a custom dispatcher sees metadata and sender", %{mesh: mesh, topic: topic} do
        :ok = Mesh.subscribe(mesh, topic, metadata: :fastlane)
        :ok = Mesh.broadcast(mesh, topic, :a, CustomDispatcher)
        assert_receive {:custom, :fastlane, :none, :a}
        :ok = Mesh.broadcast_from(mesh, self(), topic, :b, CustomDispatcher)
        me = self()
        assert_receive {:custom, :fastlane, ^me, :b}
        :ok = Mesh.local_broadcast(mesh, topic, :c, CustomDispatcher)
        assert_receive {:custom, :fastlane, :none, :c}
      end

      test "a queue group gets each message once, round robin; plain subscribers get all",
           %{mesh: mesh, topic: topic} do
        group = for _ <- 1..3, do: subscriber(mesh, topic, group: "workers")
        other_group = for _ <- 1..2, do: subscriber(mesh, topic, group: "audit")
        plain = for _ <- 1..2, do: subscriber(mesh, topic)

        for i <- 1..30, do: :ok = Mesh.broadcast(mesh, topic, i)
        # The processes run concurrently; a last message through each shows they are done.
        for {tag, pid} <- group ++ other_group ++ plain, do: send(pid, :done)
        for {tag, pid} <- group ++ other_group ++ plain, do: assert_receive({^tag, ^pid, :done})

        got = fn subs -> for {tag, pid} <- subs, do: received(tag, pid) -- [:done] end
        for msgs <- got.(plain), do: assert(msgs == Enum.to_list(1..30))

        # Sent before :done, so already here: every message once per group.
        workers = got.(group)
        assert workers |> List.flatten() |> Enum.sort() == Enum.to_list(1..30)
        assert Enum.map(workers, &length/1) == [10, 10, 10]
        audit = got.(other_group)
        assert audit |> List.flatten() |> Enum.sort() == Enum.to_list(1..30)
        assert Enum.map(audit, &length/1) == [15, 15]
      end

      test "group members are told apart from plain subscribers", %{mesh: mesh, topic: topic} do
        {_, member} = subscriber(mesh, topic, group: "g", metadata: %{agent: "a"})
        {_, plain} = subscriber(mesh, topic)
        assert Mesh.members(mesh, topic, "g") == [member]
        assert Mesh.members(mesh, topic, nil) == [plain]

        assert {topic, member, "g", %{agent: "a"}} in Mesh.subscriptions(mesh)
        assert {topic, plain, nil, nil} in Mesh.subscriptions(mesh)
      end

      test "broadcast_from never picks the sender in its group", %{mesh: mesh, topic: topic} do
        {tag, other} = subscriber(mesh, topic, group: "g")
        :ok = Mesh.subscribe(mesh, topic, group: "g")
        for i <- 1..10, do: :ok = Mesh.broadcast_from(mesh, self(), topic, i)
        for i <- 1..10, do: assert_receive({^tag, ^other, ^i})
        refute_receive _unexpected, 50
      end

      test "unsubscribe leaves the topic's groups", %{mesh: mesh, topic: topic} do
        :ok = Mesh.subscribe(mesh, topic, group: "g")
        :ok = Mesh.unsubscribe(mesh, topic)
        assert Mesh.members(mesh, topic, "g") == []
        :ok = Mesh.broadcast(mesh, topic, :gone)
        refute_receive :gone, 50
      end

      test "a plain subscriber that exits is dropped from every topic", %{
        mesh: mesh,
        topic: topic
      } do
        other = topic <> ":other"
        parent = self()

        pid =
          spawn(fn ->
            :ok = Mesh.subscribe(mesh, topic)
            :ok = Mesh.subscribe(mesh, other, metadata: :m)
            send(parent, :subscribed)
            receive(do: (:never -> :ok))
          end)

        assert_receive :subscribed
        assert Mesh.members(mesh, topic, nil) == [pid]
        assert {other, pid, nil, :m} in Mesh.subscriptions(mesh)
        kill!(pid)
        # The table's owner drops the rows when it hears of the exit, just after.
        assert wait_until(fn -> Enum.all?(Mesh.subscriptions(mesh), &(elem(&1, 1) != pid)) end)
        assert Mesh.members(mesh, topic, nil) == []
        assert Mesh.members(mesh, other, nil) == []
      end

      test "a subscriber stays linked to the mesh only while it has subscriptions",
           %{mesh: mesh, topic: topic} do
        {:links, before} = Process.info(self(), :links)
        :ok = Mesh.subscribe(mesh, topic)
        :ok = Mesh.subscribe(mesh, topic <> ":2")
        :ok = Mesh.unsubscribe(mesh, topic)
        {:links, linked} = Process.info(self(), :links)
        :ok = Mesh.unsubscribe(mesh, topic <> ":2")
        {:links, now} = Process.info(self(), :links)
        # One link to whatever keeps the subscriptions (so they go when the subscriber
        # exits), whatever their number; it goes with the last unsubscribe.
        assert length(linked) == length(before) + 1
        assert Enum.sort(now) == Enum.sort(before)
        :ok = Mesh.broadcast(mesh, topic, :gone)
        refute_receive :gone, 50
      end

      test "a member that exits leaves its group", %{mesh: mesh, topic: topic} do
        {_, member} = subscriber(mesh, topic, group: "g")
        Process.unlink(member)
        kill!(member)
        :ok = Mesh.subscribe(mesh, topic, group: "g")
        # :pg notices the exit asynchronously; both are members until it does.
        assert wait_until(fn -> Mesh.members(mesh, topic, "g") == [self()] end)
        :ok = Mesh.broadcast(mesh, topic, :to_me)
        assert_receive :to_me
      end

      # A subscriber's load counter as Symbiont.Agent.Server keeps it: slot 1, its queue
      # length plus the room checked publishes reserved on their way to it (a server takes
      # a reservation off as the event arrives; these subscribers never do); slot 2, 1
      # while its journal cannot be written.
      # An agent's load counters (Symbiont.Agent.Server): `queued` events of `bytes`
      # bytes in all, in a queue of `max` events and `max_bytes` bytes.
      defp load(max, queued, overflow \\ :reject, max_bytes \\ 1_000_000, bytes \\ 0) do
        ref = :atomics.new(3, signed: true)
        :atomics.put(ref, 1, queued)
        :atomics.put(ref, 3, bytes)
        {ref, max, max_bytes, overflow}
      end

      defp journal_down({ref, _, _, _} = load) do
        :atomics.put(ref, 2, 1)
        load
      end

      defp event(topic, value), do: Symbiont.Event.new!(topic, value)

      test "publish/3 counts events by publisher and topic", %{mesh: mesh, topic: topic} do
        :ok = Mesh.subscribe(mesh, topic)
        e = event(topic, 1)
        :ok = Mesh.publish(mesh, e)
        :ok = Mesh.publish(mesh, %{e | from: "billing"})
        :ok = Mesh.publish(mesh, %{e | from: "billing"})
        assert_receive %Symbiont.Event{from: nil}
        assert_receive %Symbiont.Event{from: "billing"}

        assert %{node: node, publishers: publishers, subscribers: subscribers} =
                 Mesh.node_stats(mesh)

        assert node == node()
        assert %{publisher: "elixir", topic: topic, count: 1} in publishers
        assert %{publisher: "billing", topic: topic, count: 2} in publishers
        assert [%{topic: ^topic, group: nil, count: nil}] = subscribers
      end

      test "the counters stay within :max_edges: the least recently used go, and are counted" do
        mesh = :"mesh_#{System.unique_integer([:positive])}"
        start_supervised!({Mesh, name: mesh, adapter: @adapter, max_edges: 10}, id: mesh)
        %{stats: stats, server: server} = Mesh.meta(mesh)
        publish = fn i -> :ok = Mesh.publish(mesh, %{event("lru.#{i}", i) | from: "p"}) end
        counted = fn -> for %{topic: t} <- Mesh.node_stats(mesh).publishers, do: t end

        for i <- 1..10, do: publish.(i)
        # Used again: 6 and 7 are now the least recently used.
        for i <- [1, 2, 3, 4, 5, 8, 9, 10], do: publish.(i)
        publish.(11)

        # Down to 90% of the bound, in the server, soon after the 11th.
        assert wait_until(fn -> :ets.info(stats, :size) == 9 end)

        assert Enum.sort(counted.()) ==
                 Enum.sort(for i <- [1, 2, 3, 4, 5, 8, 9, 10, 11], do: "lru.#{i}")

        assert %{evicted: %{edges: 2, events: 2}} = Mesh.node_stats(mesh)

        # A server that cannot keep up: past twice the bound a new counter goes at once.
        :sys.suspend(server)
        for i <- 12..40, do: publish.(i)
        assert :ets.info(stats, :size) == 20
        # Then the server's pass keeps the 9 most recently used.
        :sys.resume(server)
        assert wait_until(fn -> :ets.info(stats, :size) == 9 end)
        assert Enum.sort(counted.()) == Enum.sort(for i <- 14..22, do: "lru.#{i}")
        # 2, then 23..40 at once, then 11 in the server's pass.
        # Events: 1 each, but 1..5 and 8..10, used twice.
        assert %{evicted: %{edges: 31, events: 39}} = Mesh.node_stats(mesh)
      end

      test "a bad :max_edges is refused, naming it" do
        assert_raise ArgumentError, ~r/the :max_edges of a Symbiont.Mesh .* got: 0/, fn ->
          Mesh.child_spec(name: :bad_mesh, adapter: @adapter, max_edges: 0)
        end
      end

      test "a checked publish is refused when a rejecting subscriber is full",
           %{mesh: mesh, topic: topic} do
        {_, full} = subscriber(mesh, topic, metadata: %{agent: "full", load: load(2, 2)})
        assert {:error, :overloaded} = Mesh.publish(mesh, event(topic, 1), checked: true)
        # Unchecked, it is sent: the subscriber's own policy deals with it.
        assert :ok = Mesh.publish(mesh, event(topic, 2))
        send(full, :done)
        assert [%Symbiont.Event{}, :done] = wait_all(full)
      end

      # An event whose payload is `n` bytes.
      defp sized(topic, n), do: %{event(topic, 0) | payload: :binary.copy(<<0>>, n)}

      test "a checked publish is refused when a rejecting subscriber is full in bytes; what it reserved is given back",
           %{mesh: mesh, topic: topic} do
        # 95 of 100 bytes taken, room for many events: 10 bytes do not fit, 5 do.
        {ref, _, _, _} = load = load(1_000, 3, :reject, 100, 95)
        {tag, sub} = subscriber(mesh, topic, metadata: %{load: load})
        assert {:error, :overloaded} = Mesh.publish(mesh, sized(topic, 10), checked: true)
        assert {:atomics.get(ref, 1), :atomics.get(ref, 3)} == {3, 95}
        assert :ok = Mesh.publish(mesh, sized(topic, 5), checked: true)
        # Reserved until the subscriber takes it (an agent's server gives it back then).
        assert {:atomics.get(ref, 1), :atomics.get(ref, 3)} == {4, 100}
        assert_receive {^tag, ^sub, %Symbiont.Event{payload: <<0, 0, 0, 0, 0>>}}
        refute_received {^tag, ^sub, _}
      end

      test "publishers racing for the last bytes of a rejecting queue: exactly as many as fit are told :ok",
           %{mesh: mesh, topic: topic} do
        # Room for 1,000 events but 10 of these in bytes; 50 publishers at once.
        {ref, _, _, _} = load = load(1_000, 0, :reject, 1_000, 0)
        {_, _sub} = subscriber(mesh, topic, metadata: %{load: load})

        results =
          1..50
          |> Task.async_stream(fn _ -> Mesh.publish(mesh, sized(topic, 100), checked: true) end,
            max_concurrency: 50
          )
          |> Enum.map(fn {:ok, result} -> result end)

        assert Enum.count(results, &(&1 == :ok)) == 10
        assert Enum.count(results, &(&1 == {:error, :overloaded})) == 40
        assert {:atomics.get(ref, 1), :atomics.get(ref, 3)} == {10, 1_000}
      end

      test "a checked publish larger than a subscriber's queue may hold in bytes is :too_large, whatever its policy",
           %{mesh: mesh, topic: topic} do
        {_, _plain} = subscriber(mesh, topic, metadata: %{load: load(10, 0, :drop_oldest, 100)})
        assert {:error, :too_large} = Mesh.publish(mesh, sized(topic, 101), checked: true)
        assert :ok = Mesh.publish(mesh, sized(topic, 100), checked: true)

        # A group: too large for every member is :too_large; for one, another takes it.
        group = topic <> ":g"

        {_, _small} =
          subscriber(mesh, group, group: "g", metadata: %{load: load(10, 0, :reject, 100)})

        assert {:error, :too_large} = Mesh.publish(mesh, sized(group, 101), checked: true)

        {tag, big} =
          subscriber(mesh, group, group: "g", metadata: %{load: load(10, 0, :reject, 1_000)})

        assert :ok = Mesh.publish(mesh, sized(group, 101), checked: true)
        assert_receive {^tag, ^big, %Symbiont.Event{}}
      end

      test "a checked publish tells each subscriber whether room was reserved for it, and nothing of the others",
           %{mesh: mesh, topic: topic} do
        # Each copy says `reserved: true` or false, whatever the number of subscribers: a
        # list of the pids it reserved room in, in every copy, cost N subscribers N pids
        # each (bench/curves: 10,000 agents took 2.4 GB and a seventh of the throughput).
        loaded = for _ <- 1..50, do: subscriber(mesh, topic, metadata: %{load: load(10, 0)})
        plain = subscriber(mesh, topic)
        member = subscriber(mesh, topic, group: "g", metadata: %{load: load(10, 0)})

        assert :ok = Mesh.publish(mesh, event(topic, 1), checked: true)

        for {tag, pid} <- [member | loaded] do
          assert_receive {^tag, ^pid, %Symbiont.Event{reserved: true} = e}
          assert :erts_debug.flat_size(e) == :erts_debug.flat_size(event(topic, 1))
        end

        {tag, pid} = plain
        assert_receive {^tag, ^pid, %Symbiont.Event{reserved: false}}
      end

      test "a checked publish picks a group member with room, and is refused when none has",
           %{mesh: mesh, topic: topic} do
        {tag, roomy} = subscriber(mesh, topic, group: "g", metadata: %{load: load(10, 0)})
        full_load = load(5, 5)
        {full_tag, full} = subscriber(mesh, topic, group: "g", metadata: %{load: full_load})

        for i <- 1..6, do: assert(:ok = Mesh.publish(mesh, event(topic, i), checked: true))
        for i <- 1..6, do: assert_receive({^tag, ^roomy, %Symbiont.Event{}})
        send(full, :done)
        assert wait_all(full) == [:done]

        # Now both are full.
        {ref, _, _, _} = full_load
        roomy_meta = Mesh.subscriptions(mesh) |> Enum.find(&(elem(&1, 1) == roomy)) |> elem(3)
        {roomy_ref, _, _, _} = roomy_meta.load
        # 6 reservations (these subscribers never take them) + 4 queued: no room left.
        assert :atomics.add_get(roomy_ref, 1, 4) == 10
        assert {:error, :overloaded} = Mesh.publish(mesh, event(topic, 7), checked: true)
        # A refused publish gives back what it reserved.
        assert :atomics.get(roomy_ref, 1) == 10
        :atomics.put(ref, 1, 0)
        assert :ok = Mesh.publish(mesh, event(topic, 8), checked: true)
        assert_receive {^full_tag, ^full, %Symbiont.Event{}}
      end

      test "a checked publish is refused while a subscriber's journal cannot be written, whatever its overflow policy",
           %{mesh: mesh, topic: topic} do
        roomy = load(10, 0)
        {tag, ok} = subscriber(mesh, topic, metadata: %{load: roomy})
        down = journal_down(load(10, 0, :drop_oldest))
        {_, refusing} = subscriber(mesh, topic, metadata: %{load: down})

        assert {:error, :journal_unavailable} = Mesh.publish(mesh, event(topic, 1), checked: true)

        # Nothing was sent, and the room taken in the other subscriber was given back.
        {roomy_ref, _, _, _} = roomy
        assert :atomics.get(roomy_ref, 1) == 0
        send(refusing, :done)
        assert wait_all(refusing) == [:done]

        refute_received {^tag, ^ok, _}
        {down_ref, _, _, _} = down
        :atomics.put(down_ref, 2, 0)
        assert :ok = Mesh.publish(mesh, event(topic, 2), checked: true)
        assert_receive {^tag, ^ok, %Symbiont.Event{}}
      end

      test "a checked publish skips a group member whose journal cannot be written; all of them down is :journal_unavailable",
           %{mesh: mesh, topic: topic} do
        {tag, up} = subscriber(mesh, topic, group: "g", metadata: %{load: load(10, 0)})
        down = journal_down(load(10, 0))
        {_, _down} = subscriber(mesh, topic, group: "g", metadata: %{load: down})

        for i <- 1..4, do: assert(:ok = Mesh.publish(mesh, event(topic, i), checked: true))
        for _ <- 1..4, do: assert_receive({^tag, ^up, %Symbiont.Event{}})

        # The one that can take events is full: not the journal's fault alone.
        up_meta = Mesh.subscriptions(mesh) |> Enum.find(&(elem(&1, 1) == up)) |> elem(3)
        {up_ref, _, _, _} = up_meta.load
        :atomics.put(up_ref, 1, 10)
        assert {:error, :overloaded} = Mesh.publish(mesh, event(topic, 5), checked: true)

        # Both journals down.
        :atomics.put(up_ref, 1, 0)
        :atomics.put(up_ref, 2, 1)
        assert {:error, :journal_unavailable} = Mesh.publish(mesh, event(topic, 6), checked: true)
        assert :atomics.get(up_ref, 1) == 0
      end

      test "a checked publish goes round robin among the members with room",
           %{mesh: mesh, topic: topic} do
        {tag_a, a} = subscriber(mesh, topic, group: "g", metadata: %{load: load(100, 0)})
        {tag_b, b} = subscriber(mesh, topic, group: "g", metadata: %{load: load(100, 0)})
        for i <- 1..6, do: assert(:ok = Mesh.publish(mesh, event(topic, i), checked: true))
        send(a, :done)
        send(b, :done)
        got_a = for {^tag_a, _, %Symbiont.Event{} = e} <- wait_tagged(a), do: e
        got_b = for {^tag_b, _, %Symbiont.Event{} = e} <- wait_tagged(b), do: e
        assert {length(got_a), length(got_b)} == {3, 3}
      end

      # What `pid` got, with its tags, up to the :done sent to it.
      defp wait_tagged(pid) do
        Stream.repeatedly(fn ->
          receive do
            {_tag, ^pid, :done} -> :done
            {_tag, ^pid, _msg} = got -> got
          after
            1_000 -> flunk("no message from #{inspect(pid)}")
          end
        end)
        |> Enum.take_while(&(&1 != :done))
      end

      defp wait_all(pid) do
        Stream.repeatedly(fn ->
          receive do
            {_tag, ^pid, msg} -> msg
          after
            1_000 -> flunk("no message from #{inspect(pid)}")
          end
        end)
        |> Enum.reduce_while([], fn
          :done, acc -> {:halt, Enum.reverse([:done | acc])}
          msg, acc -> {:cont, [msg | acc]}
        end)
      end

      test "bad arguments say what is wrong", %{mesh: mesh, topic: topic} do
        assert {:error, {:invalid_group, msg}} = Mesh.subscribe(mesh, topic, group: :atom)
        assert msg =~ "must be a string, got: :atom"

        assert_raise ArgumentError, ~r/no Symbiont.Mesh named :nope is running/, fn ->
          Mesh.broadcast(:nope, topic, :x)
        end

        assert_raise ArgumentError, ~r/needs a :name/, fn -> Mesh.child_spec([]) end

        assert_raise ArgumentError, ~r/must be an atom, got: "x"/, fn ->
          Mesh.child_spec(name: "x")
        end

        assert_raise ArgumentError, ~r/implementing Symbiont.Mesh.Adapter, got: String/, fn ->
          Mesh.child_spec(name: :x, adapter: String)
        end
      end
    end
  end
end

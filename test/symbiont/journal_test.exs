defmodule Symbiont.JournalTest do
  # The journal on a real disk_log in a temporary directory. Each test opens it from its
  # own process (the owner the log is linked to) and reopens it the way a restarted
  # agent does.
  use ExUnit.Case, async: true

  alias Symbiont.{Event, Journal}

  @moduletag :tmp_dir

  doctest Symbiont.Journal

  # The agent numbers the events it accepts (their seq); here event i is number i.
  defp event(i), do: %{Event.new!("journal.in", i, "pub") | seq: i}

  defp accept_all(journal, events) do
    Enum.map_reduce(events, journal, fn e, j -> Journal.accept(j, e) end)
  end

  defp values(pending), do: Enum.map(pending, &Event.decode!/1)

  # Reopens `path` as a new owner would: the old log closed first.
  defp reopen(journal, opts \\ []) do
    :ok = Journal.close(journal)
    {:ok, journal, restored} = Journal.open(journal.path, opts)
    {journal, restored}
  end

  test "a new journal restores nothing", %{tmp_dir: dir} do
    path = Path.join(dir, "a/agent.log")
    assert {:ok, journal, %{checkpoint: nil, pending: []}} = Journal.open(path)
    assert File.regular?(path)
    assert %{accepted: 0, pending: 0, compactions: 0} = Journal.info(journal)
  end

  test "committed events and checkpoints come back; what was done does not", %{tmp_dir: dir} do
    {:ok, j, _} = Journal.open(Path.join(dir, "agent.log"))
    {[e1, e2, e3, e4], j} = accept_all(j, Enum.map(1..4, &event/1))
    assert Enum.map([e1, e2, e3, e4], & &1.seq) == [1, 2, 3, 4]
    j = j |> Journal.done([e2, e1, {:tick, "t"}]) |> Journal.checkpoint(%{state: "s2"})
    assert Journal.dirty?(j)
    j = Journal.commit(j, fn -> flunk("no compaction expected") end)
    refute Journal.dirty?(j)
    assert %{accepted: 4, pending: 2} = Journal.info(j)

    {j, restored} = reopen(j)
    assert restored.checkpoint == %{state: "s2"}
    assert values(restored.pending) == [3, 4]
    assert Enum.map(restored.pending, & &1.seq) == [3, 4]
    assert [%Event{topic: "journal.in", from: "pub", reserved: []} | _] = restored.pending

    # Numbers go on after the restore, and a done without a checkpoint keeps the last.
    {e5, j} = Journal.accept(j, event(5))
    assert e5.seq == 5
    j = j |> Journal.done([hd(restored.pending)]) |> Journal.commit(fn -> [] end)
    {_j, restored} = reopen(j)
    assert restored.checkpoint == %{state: "s2"}
    assert values(restored.pending) == [4, 5]
  end

  test "a batch that was not committed is lost whole, events and checkpoint together",
       %{tmp_dir: dir} do
    {:ok, j, _} = Journal.open(Path.join(dir, "agent.log"))
    {[e1, _e2], j} = accept_all(j, [event(1), event(2)])
    j = Journal.commit(j, fn -> [] end)
    j = j |> Journal.done([e1]) |> Journal.checkpoint(%{state: "after 1"})
    {_e3, j} = Journal.accept(j, event(3))

    {_j, restored} = reopen(j)
    assert restored.checkpoint == nil
    assert values(restored.pending) == [1, 2]
  end

  test "a torn record at the end (a crash mid-write) is cut off", %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    {:ok, j, _} = Journal.open(path)
    {_events, j} = accept_all(j, [event(1), event(2)])
    _j = Journal.commit(j, fn -> [] end)
    # The file as a node that died leaves it: still marked open, and half a record more.
    crashed = Path.join(dir, "crashed.log")
    File.cp!(path, crashed)
    %{size: size} = File.stat!(crashed)
    {:ok, f} = File.open(crashed, [:append, :binary])
    :ok = IO.binwrite(f, <<0, 0, 0, 200, 0x12, 0x34>>)
    File.close(f)

    {:ok, j, restored} = ExUnit.CaptureLog.with_log(fn -> Journal.open(crashed) end) |> elem(0)

    assert values(restored.pending) == [1, 2]
    assert File.stat!(crashed).size == size
    {e3, j} = Journal.accept(j, event(3))
    j = Journal.commit(j, fn -> [] end)
    assert e3.seq == 3
    {_j, restored} = reopen(j)
    assert values(restored.pending) == [1, 2, 3]
  end

  test "compaction keeps the file bounded and the content the same", %{tmp_dir: dir} do
    {:ok, j, _} = Journal.open(Path.join(dir, "agent.log"), compact_min_bytes: 4_096)
    state = String.duplicate("s", 500)

    # 2,000 events through a queue that never holds more than 5; a checkpoint each.
    {j, _queue} =
      Enum.reduce(1..2_000, {j, :queue.new()}, fn i, {j, queue} ->
        {e, j} = Journal.accept(j, event(i))
        queue = :queue.in(e, queue)

        {j, queue} =
          if :queue.len(queue) > 5 do
            {{:value, old}, queue} = :queue.out(queue)
            {j |> Journal.done([old]) |> Journal.checkpoint(%{state: "#{state}#{i}"}), queue}
          else
            {j, queue}
          end

        {Journal.commit(j, fn -> :queue.to_list(queue) end), queue}
      end)

    info = Journal.info(j)
    assert info.compactions > 10
    assert info.pending == 5
    # 2,000 records of ~600 bytes would be over 1 MB.
    assert info.bytes < 16_384
    refute File.exists?(j.path <> ".new")

    {j, restored} = reopen(j, compact_min_bytes: 4_096)
    assert values(restored.pending) == Enum.to_list(1_996..2_000)
    assert restored.checkpoint == %{state: "#{state}2000"}
    {e, _j} = Journal.accept(j, event(2_001))
    assert e.seq == 2_001
  end

  test "a compaction cut short before its rename leaves the journal whole", %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    {:ok, j, _} = Journal.open(path)
    {_events, j} = accept_all(j, [event(1), event(2)])
    j = Journal.commit(j, fn -> [] end)
    :ok = Journal.close(j)
    File.write!(path <> ".new", "half a compaction")

    assert {:ok, _j, restored} = Journal.open(path)
    assert values(restored.pending) == [1, 2]
    refute File.exists?(path <> ".new")
  end

  test "delete removes the file", %{tmp_dir: dir} do
    {:ok, j, _} = Journal.open(Path.join(dir, "agent.log"))
    :ok = Journal.delete(j)
    refute File.exists?(j.path)
  end

  test "the data directory comes from the application env" do
    assert Journal.data_dir() == Path.expand(Application.fetch_env!(:symbiont, :data_dir))
  end
end

defmodule Symbiont.JournalTest do
  # The journal on real files in a temporary directory (and, for a full disk, on a tiny
  # tmpfs: the :tmpfs tests). Each test opens it from its own process and reopens it the
  # way a restarted agent does.
  use ExUnit.Case, async: true

  import Bitwise
  import ExUnit.CaptureLog
  import Symbiont.Disk

  alias Symbiont.{Event, Journal}

  @moduletag :tmp_dir

  doctest Symbiont.Journal
  doctest Symbiont.Journal.Format

  test "Format.replay/1: the last checkpoint, the events not done, next after the highest seq" do
    alias Symbiont.Journal.Format

    records = [
      {:in, 1, %{a: 1}},
      {:in, 2, %{a: 2}},
      {:done, [1], %{n: 1}},
      {:in, 5, %{a: 5}},
      {:done, [5], nil}
    ]

    assert %{next: 6, checkpoint: %{n: 1}, pending: %{2 => %{a: 2}}} = Format.replay(records)

    assert %{next: 9, checkpoint: %{n: 7}, pending: %{}, bytes: 0} =
             Format.replay(records ++ [{:reset, Format.version(), 9, %{n: 7}}])
  end

  test "Format.parse/2: a bad record with a whole one after it is corruption, not a torn tail" do
    alias Symbiont.Journal.Format

    {data, _} = Format.encode([{:in, 1, %{a: 1}}, {:in, 2, %{a: 2}}], "mark")
    bin = IO.iodata_to_binary([Format.header("mark"), data])
    # Flip a byte inside the first record's term.
    <<head::binary-30, byte, rest::binary>> = bin
    bad = <<head::binary, Bitwise.bxor(byte, 0xFF), rest::binary>>

    assert {:error, {:journal_corrupt, "j", 16, _why}} = Format.parse(bad, "j")
    assert Format.parse(<<1, 2, 3, 4, 0>>, "j") == :disk_log
    assert {:error, {:journal_format, "j", _}} = Format.parse("not a journal at all", "j")
  end

  # The agent numbers the events it accepts (their seq); here event i is number i.
  defp event(i, payload \\ nil), do: %{Event.new!("journal.in", payload || i, "pub") | seq: i}

  defp accept_all(journal, events) do
    Enum.map_reduce(events, journal, fn e, j -> Journal.accept(j, e) end)
  end

  defp commit!(journal, pending \\ fn -> [] end) do
    assert {:ok, journal} = Journal.commit(journal, pending)
    journal
  end

  defp values(pending), do: Enum.map(pending, &Event.decode!/1)

  # Reopens `path` as a new owner would: the old file closed first.
  defp reopen(journal, opts \\ []) do
    :ok = Journal.close(journal)
    {:ok, journal, restored} = Journal.open(journal.path, opts)
    {journal, restored}
  end

  defp size(path), do: File.stat!(path).size

  describe "the directory a journal lives in" do
    # Data dir <dir>/data, the node's own directory <dir>/data/node (Journal.path/3).
    setup %{tmp_dir: dir} do
      data = Path.join(dir, "data")
      %{data: data, sub: Path.join(data, "node"), path: Path.join([data, "node", "a.log"])}
    end

    test "is made for the node's user alone", %{data: data, sub: sub, path: path} do
      assert {:ok, journal, _} = Journal.open(path)
      :ok = Journal.close(journal)
      assert mode(data) == 0o700
      assert mode(sub) == 0o700
    end

    test "a link in place of the node's own directory is refused, and nothing is written where it points",
         %{data: data, sub: sub, path: path, tmp_dir: dir} do
      target = Path.join(dir, "elsewhere")
      File.mkdir_p!(target)
      File.mkdir_p!(data)
      File.ln_s!(target, sub)

      assert {:error, {:journal_unsafe, ^sub, why} = error} = Journal.open(path)
      assert why =~ "it is a symlink, not a directory"
      assert Journal.format_error(error) =~ "the journal's directory #{sub} is refused"
      assert File.ls!(target) == []
    end

    test "a directory other users can write to is refused, naming the mode and the fix",
         %{data: data, sub: sub, path: path} do
      File.mkdir_p!(sub)
      File.chmod!(sub, 0o775)
      assert {:error, {:journal_unsafe, ^sub, why}} = Journal.open(path)
      assert why == "other users can write to it (mode 775): chmod go-w #{sub}"

      # The data directory may be shared when it is sticky (as /tmp is), not otherwise.
      File.chmod!(sub, 0o700)
      File.chmod!(data, 0o777)
      assert {:error, {:journal_unsafe, ^data, _}} = Journal.open(path)
      # (File.chmod/2 leaves the sticky bit out.)
      {_, 0} = System.cmd("chmod", ["1777", data])
      assert {:ok, journal, _} = Journal.open(path)
      :ok = Journal.close(journal)
    end

    @tag :root
    test "a directory that belongs to another user is refused", %{sub: sub, path: path} do
      File.mkdir_p!(sub)
      File.chmod!(sub, 0o755)
      {_, 0} = System.cmd("chown", ["nobody", sub])
      assert {:error, {:journal_unsafe, ^sub, why}} = Journal.open(path)
      assert why =~ "not to the node's user"
    end
  end

  defp mode(path), do: File.lstat!(path).mode &&& 0o7777

  test "a new journal restores nothing, and is an empty file until its first commit",
       %{tmp_dir: dir} do
    path = Path.join(dir, "a/agent.log")
    assert {:ok, journal, %{checkpoint: nil, pending: []}} = Journal.open(path)
    assert File.regular?(path)
    assert size(path) == 0
    assert %{accepted: 0, pending: 0, compactions: 0, error: nil} = Journal.info(journal)
    {_e, journal} = Journal.accept(journal, event(1))
    commit!(journal)
    assert <<"SYMJ", 0, 0, 0, 2, _::binary>> = File.read!(path)
  end

  test "committed events and checkpoints come back; what was done does not", %{tmp_dir: dir} do
    {:ok, j, _} = Journal.open(Path.join(dir, "agent.log"))
    {[e1, e2, e3, e4], j} = accept_all(j, Enum.map(1..4, &event/1))
    assert Enum.map([e1, e2, e3, e4], & &1.seq) == [1, 2, 3, 4]
    j = j |> Journal.done([e2, e1, {:tick, "t"}]) |> Journal.checkpoint(%{state: "s2"})
    assert Journal.dirty?(j)
    j = commit!(j, fn -> flunk("no compaction expected") end)
    refute Journal.dirty?(j)
    assert %{accepted: 4, pending: 2} = Journal.info(j)

    {j, restored} = reopen(j)
    assert restored.checkpoint == %{state: "s2"}
    assert values(restored.pending) == [3, 4]
    assert Enum.map(restored.pending, & &1.seq) == [3, 4]
    assert [%Event{topic: "journal.in", from: "pub", reserved: false} | _] = restored.pending

    # Numbers go on after the restore, and a done without a checkpoint keeps the last.
    {e5, j} = Journal.accept(j, event(5))
    assert e5.seq == 5
    j = j |> Journal.done([hd(restored.pending)]) |> commit!()
    {_j, restored} = reopen(j)
    assert restored.checkpoint == %{state: "s2"}
    assert values(restored.pending) == [4, 5]
  end

  test "a batch that was not committed is lost whole, events and checkpoint together",
       %{tmp_dir: dir} do
    {:ok, j, _} = Journal.open(Path.join(dir, "agent.log"))
    {[e1, _e2], j} = accept_all(j, [event(1), event(2)])
    j = commit!(j)
    j = j |> Journal.done([e1]) |> Journal.checkpoint(%{state: "after 1"})
    {_e3, j} = Journal.accept(j, event(3))

    {_j, restored} = reopen(j)
    assert restored.checkpoint == nil
    assert values(restored.pending) == [1, 2]
  end

  # A journal written one record per commit, and what it restores after each: {bytes of
  # the file, checkpoint, pending values, next}.
  defp history(path) do
    {:ok, j, _} = Journal.open(path)
    {e1, j} = Journal.accept(j, event(1))
    j = commit!(j)
    at1 = {j.offset, nil, [1], 2}
    {e2, j} = Journal.accept(j, event(2, String.duplicate("b", 40)))
    j = commit!(j)
    at2 = {j.offset, nil, [1, String.duplicate("b", 40)], 3}
    j = j |> Journal.done([e1]) |> Journal.checkpoint(%{state: "s1"}) |> commit!()
    at3 = {j.offset, %{state: "s1"}, [String.duplicate("b", 40)], 3}
    {_e3, j} = Journal.accept(j, event(3))
    j = commit!(j)
    at4 = {j.offset, %{state: "s1"}, [String.duplicate("b", 40), 3], 4}
    j = j |> Journal.done([e2]) |> Journal.checkpoint(%{state: "s2"}) |> commit!()
    at5 = {j.offset, %{state: "s2"}, [3], 4}
    :ok = Journal.close(j)
    assert size(path) == j.offset
    # Empty, then the header alone (written with the first record), then a record a time.
    [{0, nil, [], 1}, {16, nil, [], 1}, at1, at2, at3, at4, at5]
  end

  @tag :capture_log
  test "a file cut at any byte restores the records whole before the cut, and is cut back to them",
       %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    history = history(path)
    bin = File.read!(path)
    cut = Path.join(dir, "cut.log")

    for len <- 0..byte_size(bin) do
      File.write!(cut, binary_part(bin, 0, len))

      {bytes, checkpoint, pending, next} =
        history |> Enum.filter(&(elem(&1, 0) <= len)) |> List.last()

      assert {:ok, j, restored} = Journal.open(cut), "cut at #{len}"

      assert {restored.checkpoint, values(restored.pending), restored.next} ==
               {checkpoint, pending, next},
             "cut at #{len}"

      assert size(cut) == bytes, "cut at #{len}"
      # It goes on from there: the next event is numbered after the last it kept.
      {e, j} = Journal.accept(j, event(next))
      j = commit!(j)
      {_j, restored} = reopen(j)
      assert values(restored.pending) == pending ++ [next]
      assert e.seq == next
      :ok = Journal.close(j)
    end
  end

  test "a torn tail is cut with a warning naming the file and the bytes dropped",
       %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    [_, _, _, _, _, {at4, _, _, _}, {at5, _, _, _}] = history(path)
    File.write!(path, binary_part(File.read!(path), 0, at5 - 3))

    log = capture_log(fn -> assert {:ok, _, _} = Journal.open(path) end)
    assert log =~ path
    assert log =~ "#{at5 - 3 - at4} bytes dropped, from offset #{at4}"
    assert size(path) == at4
  end

  @tag :capture_log
  test "garbage or zeros after the last record are cut off", %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    [_, _, _, _, _, _, {at5, _, _, _}] = history(path)
    good = File.read!(path)

    for tail <- [
          <<0>>,
          :binary.copy(<<0>>, 4096),
          :crypto.strong_rand_bytes(7),
          :crypto.strong_rand_bytes(5000),
          # The start of a record whose length runs past the end of the file.
          binary_part(good, 16, 12)
        ] do
      File.write!(path, good <> tail)
      assert {:ok, j, restored} = Journal.open(path)
      assert {restored.checkpoint, values(restored.pending)} == {%{state: "s2"}, [3]}
      assert size(path) == at5
      :ok = Journal.close(j)
    end
  end

  test "a bad byte with whole records after it is corruption: refused, naming the file and the offset",
       %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    [_, _, {at1, _, _, _}, {at2, _, _, _} | _] = history(path)
    good = File.read!(path)

    # In the payload of the second record, and in its length.
    for at <- [at2 - 5, at1 + 6] do
      <<before::binary-size(at), byte, rest::binary>> = good
      File.write!(path, <<before::binary, Bitwise.bxor(byte, 0xFF), rest::binary>>)

      assert {:error, {:journal_corrupt, ^path, ^at1, why} = reason} = Journal.open(path)
      assert why =~ "a whole record follows at byte #{at2}"
      message = Journal.format_error(reason)
      assert message =~ path
      assert message =~ "corrupt at byte #{at1}"
      # Left as it was, for whoever looks into it.
      assert byte_size(File.read!(path)) == byte_size(good)
    end

    # In the header.
    <<head::binary-size(9), byte, rest::binary>> = good
    File.write!(path, <<head::binary, Bitwise.bxor(byte, 1), rest::binary>>)
    assert {:error, {:journal_corrupt, ^path, 0, _}} = Journal.open(path)
  end

  @tag :capture_log
  test "a payload made of another journal's records cannot pass for records of this one",
       %{tmp_dir: dir} do
    # An event whose payload is a whole journal (records an attacker could have written
    # through a journal of their own), torn in the middle of that payload: a torn tail.
    other = Path.join(dir, "other.log")
    history(other)
    forged = File.read!(other)

    path = Path.join(dir, "agent.log")
    {:ok, j, _} = Journal.open(path)
    {_e1, j} = Journal.accept(j, event(1))
    j = commit!(j)
    good = j.offset
    {_e2, j} = Journal.accept(j, %{Event.new!("journal.in", forged, "pub") | seq: 2})
    j = commit!(j)
    :ok = Journal.close(j)
    full = File.read!(path)
    File.write!(path, binary_part(full, 0, byte_size(full) - 10))

    assert {:ok, _j, restored} = Journal.open(path)
    assert values(restored.pending) == [1]
    assert size(path) == good
  end

  test "a file that is not a journal is refused, saying so", %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    File.write!(path, "hello, this is not a journal at all")
    assert {:error, {:journal_format, ^path, _} = reason} = Journal.open(path)
    assert Journal.format_error(reason) =~ "#{path} is not a journal"
  end

  test "a journal of the first format (disk_log) is read back, torn tail and all, and rewritten",
       %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")

    {:ok, log} = :disk_log.open(name: :old_journal, file: String.to_charlist(path), type: :halt)

    event = fn i -> Map.drop(Map.from_struct(event(i)), [:reserved, :seq]) end

    :ok =
      :disk_log.log_terms(log, [
        {:in, 1, event.(1)},
        {:in, 2, event.(2)},
        {:done, [1], %{state: "s1"}},
        {:in, 3, event.(3)}
      ])

    :ok = :disk_log.close(log)
    # As the first format's agents left it on a full disk: closed, with a torn record.
    File.write!(path, File.read!(path) <> <<0, 0, 0, 200, 0x12, 0x34>>)

    log = capture_log(fn -> send(self(), Journal.open(path)) end)
    assert_received {:ok, j, restored}

    assert {restored.checkpoint, values(restored.pending), restored.next} ==
             {%{state: "s1"}, [2, 3], 4}

    assert log =~ "journal #{path}: 6 bytes of torn records skipped (disk_log)"
    assert log =~ "journal #{path}: rewritten from the disk_log format"
    refute log =~ "journal #{path}: a torn record at its end"
    assert <<"SYMJ", _::binary>> = File.read!(path)
    {_j, restored} = reopen(j)
    assert values(restored.pending) == [2, 3]
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

        {commit!(j, fn -> :queue.to_list(queue) end), queue}
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
    j = commit!(j)
    :ok = Journal.close(j)
    File.write!(path <> ".new", "half a compaction")

    assert {:ok, _j, restored} = Journal.open(path)
    assert values(restored.pending) == [1, 2]
    refute File.exists?(path <> ".new")
  end

  test "a journal removed while open: the commit fails, and recover/3 writes it anew from memory",
       %{tmp_dir: dir} do
    path = Path.join(dir, "agent.log")
    {:ok, j, _} = Journal.open(path)
    {[e1, e2], j} = accept_all(j, [event(1), event(2)])
    j = j |> commit!() |> Journal.done([e1]) |> Journal.checkpoint(%{state: "s1"})
    File.rm!(path)
    {e3, j} = Journal.accept(j, event(3))

    assert {:error, {:journal_write, ^path, :removed} = reason, j} =
             Journal.commit(j, fn -> [] end)

    assert Journal.format_error(reason) =~ "#{path} was removed"
    refute Journal.available?(j)
    assert Journal.error(j) == reason
    assert Journal.info(j).error =~ path
    # Nothing more is written until it is recovered; e3's record did not make it.
    assert {:error, ^reason, ^j} = Journal.commit(j, fn -> [] end)
    assert Journal.durable?(j, 2)
    refute Journal.durable?(j, 3)

    assert {:ok, j} = Journal.recover(j, %{state: "s1"}, [e2, e3])
    assert Journal.available?(j) and Journal.durable?(j, 3)
    {e4, j} = Journal.accept(j, event(4))
    j = commit!(j)
    assert e4.seq == 4
    {_j, restored} = reopen(j)
    assert {restored.checkpoint, values(restored.pending)} == {%{state: "s1"}, [2, 3, 4]}
  end

  describe "on a full disk" do
    @describetag :tmpfs

    setup %{tmp_dir: dir}, do: %{disk: mount_tmpfs!(Path.join(dir, "disk"), "64k")}

    test "a commit the disk refuses leaves the file as the last commit left it; recover/3 writes it all once space is back",
         %{disk: disk} do
      path = Path.join([disk, "node", "agent.log"])
      {:ok, j, _} = Journal.open(path)
      {[e1, _e2], j} = accept_all(j, [event(1), event(2)])
      j = j |> commit!() |> Journal.done([e1]) |> Journal.checkpoint(%{state: "s1"})
      before = File.read!(path)
      filler = Path.join(disk, "filler")
      fill!(filler)

      # More than the room left in the journal's last page.
      {e3, j} = Journal.accept(j, event(3, String.duplicate("x", 8_192)))

      assert {:error, {:journal_write, ^path, :enospc} = reason, j} =
               Journal.commit(j, fn -> [] end)

      assert Journal.format_error(reason) =~ "no space left on device (enospc)"
      assert File.read!(path) == before
      refute Journal.durable?(j, 3)

      # Still full: recover/3 fails, and leaves nothing behind.
      assert {:error, {:journal_write, ^path, :enospc}, j} =
               Journal.recover(j, %{state: "s1"}, [event(2), e3])

      assert File.read!(path) == before
      refute File.exists?(path <> ".new")

      # What a restart would find meanwhile: the last commit.
      {:ok, j2, restored} = Journal.open(path)
      assert {restored.checkpoint, values(restored.pending)} == {nil, [1, 2]}
      :ok = Journal.close(j2)

      File.rm!(filler)
      assert {:ok, j} = Journal.recover(j, %{state: "s1"}, [event(2), e3])
      {_j, restored} = reopen(j)

      assert {restored.checkpoint, values(restored.pending)} ==
               {%{state: "s1"}, [2, String.duplicate("x", 8_192)]}
    end

    @tag :capture_log
    test "a compaction the disk refuses is dropped: the journal goes on in its file",
         %{disk: disk} do
      path = Path.join([disk, "node", "agent.log"])
      {:ok, j, _} = Journal.open(path, compact_min_bytes: 1)
      # All done: the journal compacts to its checkpoint.
      {events, j} = accept_all(j, Enum.map(1..3, &event/1))
      j = j |> Journal.done(events) |> Journal.checkpoint(%{state: "s"}) |> commit!()
      assert j.compactions == 1
      fill!(Path.join(disk, "filler"))

      # Due again, and its records fit in the journal's last page; the compaction would
      # need a page of its own.
      {e4, j} = Journal.accept(j, event(4))
      {e5, j} = Journal.accept(j, event(5))
      j = Journal.done(j, [e4])

      log = capture_log(fn -> send(self(), Journal.commit(j, fn -> [e5] end)) end)

      assert_received {:ok, j}
      assert log =~ "#{path}: compaction refused (no space left on device (enospc))"
      assert j.compactions == 1
      refute File.exists?(path <> ".new")
      assert Journal.available?(j)
      {_j, restored} = reopen(j)
      assert {restored.checkpoint, values(restored.pending)} == {%{state: "s"}, [5]}
    end
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

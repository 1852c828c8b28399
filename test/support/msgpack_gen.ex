defmodule Symbiont.MsgPackGen do
  @moduledoc false
  # Random msgpack values and byte mutations for the fuzz tests (msgpack, frames). They
  # draw from the calling process's :rand state, so a test that seeds it is reproducible.

  import Bitwise

  alias Symbiont.MsgPack.Ext

  @doc """
  The seed of a fuzz test: `$SYMBIONT_FUZZ_SEED` when set (to explore other cases, or
  replay a failure), else `default`. Seeds the calling process and returns the seed.
  """
  def seed!(default) when is_integer(default) do
    seed =
      case System.get_env("SYMBIONT_FUZZ_SEED", "") do
        "" -> default
        text -> String.to_integer(text)
      end

    :rand.seed(:exsss, {seed, 7, 11})
    seed
  end

  def random_bytes(0), do: <<>>
  def random_bytes(n), do: for(_ <- 1..n, into: <<>>, do: <<:rand.uniform(256) - 1>>)

  @doc "One byte replaced, deleted, or a few random bytes inserted."
  def mutate(<<>>), do: random_bytes(:rand.uniform(5))

  def mutate(bin) do
    pos = :rand.uniform(byte_size(bin)) - 1
    <<head::binary-size(pos), _, tail::binary>> = bin

    case :rand.uniform(3) do
      1 -> head <> <<:rand.uniform(256) - 1>> <> tail
      2 -> head <> tail
      3 -> head <> random_bytes(:rand.uniform(5)) <> tail
    end
  end

  @doc "A random msgpack-encodable term, nested a few levels at most."
  def gen(depth \\ 0) do
    case :rand.uniform(if depth < 3, do: 12, else: 8) do
      1 ->
        Enum.random([nil, true, false])

      2 ->
        :rand.uniform(1 <<< Enum.random([7, 8, 16, 32, 63])) * Enum.random([1, -1])

      3 ->
        :rand.uniform() * 1.0e6 - 5.0e5

      4 ->
        for _ <- 1..:rand.uniform(40), into: "", do: Enum.random(["a", "Z", "é", "€", "😀", " "])

      5 ->
        <<0xFF>> <> random_bytes(:rand.uniform(20))

      6 ->
        Enum.random([:ok, :error, :undefined, self(), make_ref()])

      7 ->
        DateTime.from_unix!(:rand.uniform(1 <<< 34), :second)

      8 ->
        %Ext{
          type: 10 + :rand.uniform(100),
          data: random_bytes(Enum.random([1, 2, 3, 4, 8, 16, 17]))
        }

      9 ->
        for _ <- 1..:rand.uniform(18)//1, do: gen(depth + 1)

      10 ->
        List.to_tuple(for _ <- 1..:rand.uniform(3)//1, do: gen(depth + 1))

      _ ->
        Map.new(1..:rand.uniform(6)//1, fn _ -> {gen_key(), gen(depth + 1)} end)
    end
  end

  # Keys Python can hold in a dict without collisions (True == 1 and Atom("a") == "a" there).
  def gen_key do
    case :rand.uniform(3) do
      1 -> "k#{:rand.uniform(1000)}"
      2 -> :rand.uniform(1 <<< 40)
      3 -> {:rand.uniform(10), "t"}
    end
  end
end

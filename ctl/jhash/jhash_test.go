package jhash

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// hashlittle is lookup3's byte-oriented hash, written here from its
// specification for little-endian input. Its published test vectors are an
// independent reference; on whole words it must agree with Words.
func hashlittle(key []byte, seed uint32) uint32 {
	a := uint32(initval) + uint32(len(key)) + seed
	b, c := a, a
	for len(key) > 12 {
		a += binary.LittleEndian.Uint32(key[0:])
		b += binary.LittleEndian.Uint32(key[4:])
		c += binary.LittleEndian.Uint32(key[8:])
		a, b, c = mix(a, b, c)
		key = key[12:]
	}
	if len(key) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], key)
	a += binary.LittleEndian.Uint32(tail[0:])
	b += binary.LittleEndian.Uint32(tail[4:])
	c += binary.LittleEndian.Uint32(tail[8:])
	return final(a, b, c)
}

func TestHashlittleVectors(t *testing.T) {
	// The vectors printed by lookup3.c's driver5().
	for _, tc := range []struct {
		in   string
		seed uint32
		want uint32
	}{
		{"", 0, 0xdeadbeef},
		{"", 0xdeadbeef, 0xbd5b7dde},
		{"Four score and seven years ago", 0, 0x17770551},
		{"Four score and seven years ago", 1, 0xcd628161},
	} {
		if got := hashlittle([]byte(tc.in), tc.seed); got != tc.want {
			t.Errorf("hashlittle(%q, %#x) = %#x, want %#x", tc.in, tc.seed, got, tc.want)
		}
	}
}

func TestWordsMatchesHashlittle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 12; n++ {
		for i := 0; i < 200; i++ {
			words := make([]uint32, n)
			buf := make([]byte, 4*n)
			for j := range words {
				words[j] = r.Uint32()
				binary.LittleEndian.PutUint32(buf[4*j:], words[j])
			}
			seed := r.Uint32()
			if got, want := Words(words, seed), hashlittle(buf, seed); got != want {
				t.Fatalf("Words(%d words, seed %#x) = %#x, hashlittle = %#x", n, seed, got, want)
			}
		}
	}
}

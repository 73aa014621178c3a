package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"
	"strings"
)

// bar is one row of a horizontal bar chart.
type bar struct {
	label  string
	value  float64
	lo, hi float64 // whisker, the spread over rounds
	text   string  // printed after the bar
}

// Chart geometry, in pixels. Text is the 5x7 font at twice its size, which
// stays readable when a Markdown viewer scales the image down.
const (
	fontScale  = 2
	charW      = 6 * fontScale // 5 columns and a gap
	charH      = 7 * fontScale
	chartW     = 960
	margin     = 16
	titleH     = charH + 2*margin
	rowH       = 34
	barH       = 20
	axisH      = charH + 24
	maxLabel   = 24 // characters before a label is cut
	valueChars = 10 // room after the bar for its number
)

var (
	colBackground = color.RGBA{0xff, 0xff, 0xff, 0xff}
	colText       = color.RGBA{0x20, 0x20, 0x20, 0xff}
	colGrid       = color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	colAxis       = color.RGBA{0x60, 0x60, 0x60, 0xff}
	colBar        = color.RGBA{0x3b, 0x6e, 0xa8, 0xff}
	colNegative   = color.RGBA{0xc0, 0x50, 0x40, 0xff}
	colWhisker    = color.RGBA{0x10, 0x10, 0x10, 0xff}
)

// drawBars renders a horizontal bar chart as PNG: one row per bar, labels on
// the left so long case names fit, the value on the right, and a vertical
// line at ref (0 for differences, 1 for ratios) that bars start from.
func drawBars(w io.Writer, title string, bars []bar, ref float64) error {
	labelChars := 1
	for _, b := range bars {
		labelChars = max(labelChars, min(len([]rune(b.label)), maxLabel))
	}
	plotX0 := margin + labelChars*charW + margin
	plotX1 := chartW - margin - valueChars*charW
	plotY0 := titleH
	plotY1 := plotY0 + max(len(bars), 1)*rowH
	height := plotY1 + axisH + margin

	img := image.NewRGBA(image.Rect(0, 0, chartW, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(colBackground), image.Point{}, draw.Src)
	drawText(img, margin, margin, title, colText)

	lo, hi := ref, ref
	for _, b := range bars {
		for _, v := range []float64{b.value, b.lo, b.hi} {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	ticks, step := niceTicks(lo, hi)
	lo, hi = math.Min(lo, ticks[0]), math.Max(hi, ticks[len(ticks)-1])
	x := func(v float64) int {
		return plotX0 + int(math.Round((v-lo)/(hi-lo)*float64(plotX1-plotX0)))
	}

	for _, t := range ticks {
		tx := x(t)
		fill(img, tx, plotY0, tx+1, plotY1, colGrid)
		s := fmtTick(t, step)
		drawText(img, tx-len(s)*charW/2, plotY1+8, s, colText)
	}
	fill(img, plotX0, plotY1, plotX1+1, plotY1+1, colAxis)

	for i, b := range bars {
		y := plotY0 + i*rowH + (rowH-barH)/2
		label := []rune(b.label)
		if len(label) > maxLabel {
			label = append(label[:maxLabel-2], '.', '.')
		}
		drawText(img, plotX0-margin-len(label)*charW, y+(barH-charH)/2, string(label), colText)
		x0, x1 := x(ref), x(b.value)
		col := colBar
		if x1 < x0 {
			x0, x1 = x1, x0
			col = colNegative
		}
		fill(img, x0, y, max(x1, x0+1), y+barH, col)
		mid := y + barH/2
		wl, wh := x(b.lo), x(b.hi)
		fill(img, wl, mid, wh+1, mid+2, colWhisker)
		fill(img, wl, mid-5, wl+2, mid+7, colWhisker)
		fill(img, wh-1, mid-5, wh+1, mid+7, colWhisker)
		drawText(img, plotX1+margin, y+(barH-charH)/2, b.text, colText)
	}
	rx := x(ref)
	fill(img, rx, plotY0, rx+2, plotY1, colAxis)

	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("encode png: %w", err)
	}
	return nil
}

// niceTicks returns round axis values (1, 2 or 5 times a power of ten
// apart) covering lo..hi, and their spacing.
func niceTicks(lo, hi float64) ([]float64, float64) {
	if hi-lo < 1e-9 {
		hi = lo + 1
	}
	raw := (hi - lo) / 5
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	step := pow * 10
	for _, m := range []float64{1, 2, 5} {
		if m*pow >= raw {
			step = m * pow
			break
		}
	}
	first := math.Floor(lo/step) * step
	var ticks []float64
	for i := 0; ; i++ {
		// Multiplying rather than adding keeps rounding errors from piling
		// up into labels like 0.30000000000000004.
		t := first + float64(i)*step
		ticks = append(ticks, t)
		if t >= hi-step*1e-9 {
			return ticks, step
		}
	}
}

func fmtTick(v, step float64) string {
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step)))
	}
	if math.Abs(v) < step/1e6 {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}

// drawText draws s with its top-left corner at (x, y).
func drawText(img *image.RGBA, x, y int, s string, c color.Color) {
	for _, r := range s {
		g, ok := glyphs[r]
		if !ok {
			g = missingGlyph
		}
		top := y
		if strings.ContainsRune(descenders, r) {
			top += 2 * fontScale
		}
		for row, bits := range g {
			for col, b := range bits {
				if b == '#' {
					px, py := x+col*fontScale, top+row*fontScale
					fill(img, px, py, px+fontScale, py+fontScale, c)
				}
			}
		}
		x += charW
	}
}

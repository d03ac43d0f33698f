package e2e

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"strings"
	"testing"
)

// The soak's chart: one panel per metric, one line per node, drawn with the
// standard library only (no plotting dependency in go.mod).

// chartPoint is one sample of a series; a NaN value is a gap (node down).
type chartPoint struct{ x, y float64 }

// chartSeries is one line of a panel.
type chartSeries struct {
	name   string
	points []chartPoint
}

// chartPanel is one metric over time.
type chartPanel struct {
	title  string // upper case: the font has capitals only
	series []chartSeries
	// hline, when positive, is drawn dashed across the panel (a limit).
	hline float64
	// marks are x positions drawn as short ticks under the plot, with the
	// series index choosing the colour (kills of that node).
	marks []chartMark
}

type chartMark struct {
	x      float64
	series int
}

const (
	chartWidth  = 900
	panelHeight = 230
	chartScale  = 2 // font pixels per glyph dot
	marginLeft  = 90
	marginRight = 20
	marginTop   = 34
	marginBot   = 44
)

// seriesColors are the node colours, in series order.
var seriesColors = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff},
	{0xff, 0x7f, 0x0e, 0xff}, {0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff},
}

var (
	chartWhite = color.RGBA{0xff, 0xff, 0xff, 0xff}
	chartBlack = color.RGBA{0, 0, 0, 0xff}
	chartGrey  = color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
)

// drawChart renders the panels stacked, with a legend of series names and
// the x axis in seconds, as a paletted PNG (a few colours: small file).
func drawChart(panels []chartPanel, xLabel string) ([]byte, error) {
	if len(panels) == 0 {
		return nil, fmt.Errorf("no panel to draw")
	}
	pal := color.Palette{chartWhite, chartBlack, chartGrey}
	for _, c := range seriesColors {
		pal = append(pal, c)
	}
	img := image.NewPaletted(image.Rect(0, 0, chartWidth, panelHeight*len(panels)), pal)
	draw.Draw(img, img.Bounds(), &image.Uniform{chartWhite}, image.Point{}, draw.Src)
	for i, p := range panels {
		drawPanel(img, p, image.Rect(0, i*panelHeight, chartWidth, (i+1)*panelHeight), xLabel)
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func drawPanel(img draw.Image, p chartPanel, r image.Rectangle, xLabel string) {
	plot := image.Rect(r.Min.X+marginLeft, r.Min.Y+marginTop, r.Max.X-marginRight, r.Max.Y-marginBot)
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range p.series {
		for _, pt := range s.points {
			xmin, xmax = math.Min(xmin, pt.x), math.Max(xmax, pt.x)
			if !math.IsNaN(pt.y) {
				ymax = math.Max(ymax, pt.y)
			}
		}
	}
	if math.IsInf(xmin, 0) || xmax <= xmin {
		xmin, xmax = 0, 1
	}
	ymax = niceCeil(math.Max(ymax, p.hline) * 1.05)
	px := func(x float64) int {
		return plot.Min.X + int(math.Round((x-xmin)/(xmax-xmin)*float64(plot.Dx()-1)))
	}
	py := func(y float64) int { return plot.Max.Y - 1 - int(math.Round(y/ymax*float64(plot.Dy()-1))) }

	drawText(img, r.Min.X+marginLeft, r.Min.Y+8, p.title, chartBlack)
	// Legend after the title.
	lx := r.Min.X + marginLeft + textWidth(p.title) + 30
	for i, s := range p.series {
		c := seriesColors[i%len(seriesColors)]
		fillRect(img, image.Rect(lx, r.Min.Y+12, lx+16, r.Min.Y+16), c)
		drawText(img, lx+20, r.Min.Y+8, strings.ToUpper(s.name), c)
		lx += 30 + textWidth(strings.ToUpper(s.name))
	}
	// Grid and y ticks: 0, 1/4 .. ymax.
	for k := 0; k <= 4; k++ {
		y := ymax * float64(k) / 4
		yy := py(y)
		hLine(img, plot.Min.X, plot.Max.X, yy, chartGrey, 1)
		label := formatTick(y)
		drawText(img, plot.Min.X-8-textWidth(label), yy-5, label, chartBlack)
	}
	// x ticks: about 6.
	step := niceStep((xmax - xmin) / 6)
	for x := math.Ceil(xmin/step) * step; x <= xmax; x += step {
		xx := px(x)
		vLine(img, xx, plot.Max.Y, plot.Max.Y+5, chartBlack)
		label := formatTick(x)
		drawText(img, xx-textWidth(label)/2, plot.Max.Y+8, label, chartBlack)
	}
	drawText(img, plot.Max.X-textWidth(xLabel), plot.Max.Y+26, xLabel, chartBlack)
	// Axes.
	hLine(img, plot.Min.X, plot.Max.X, plot.Max.Y-1, chartBlack, 1)
	vLine(img, plot.Min.X, plot.Min.Y, plot.Max.Y, chartBlack)
	if p.hline > 0 {
		hLine(img, plot.Min.X, plot.Max.X, py(p.hline), chartBlack, 6)
	}
	for _, m := range p.marks {
		c := seriesColors[m.series%len(seriesColors)]
		xx := px(m.x)
		fillRect(img, image.Rect(xx-1, plot.Max.Y-12, xx+2, plot.Max.Y-2), c)
	}
	for i, s := range p.series {
		c := seriesColors[i%len(seriesColors)]
		var prev *chartPoint
		for j := range s.points {
			pt := s.points[j]
			if math.IsNaN(pt.y) {
				prev = nil
				continue
			}
			if prev != nil {
				line(img, px(prev.x), py(prev.y), px(pt.x), py(pt.y), c)
			} else {
				fillRect(img, image.Rect(px(pt.x), py(pt.y), px(pt.x)+2, py(pt.y)+2), c)
			}
			prev = &s.points[j]
		}
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

// niceStep is niceCeil for a tick interval.
func niceStep(v float64) float64 { return niceCeil(v) }

func formatTick(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func fillRect(img draw.Image, r image.Rectangle, c color.Color) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}

// hLine draws a horizontal line, dashed every dash pixels when dash > 1.
func hLine(img draw.Image, x0, x1, y int, c color.Color, dash int) {
	for x := x0; x < x1; x++ {
		if dash <= 1 || (x/dash)%2 == 0 {
			img.Set(x, y, c)
		}
	}
}

func vLine(img draw.Image, x, y0, y1 int, c color.Color) {
	for y := y0; y < y1; y++ {
		img.Set(x, y, c)
	}
}

// line draws a 2-pixel-wide segment (Bresenham).
func line(img draw.Image, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// glyphs is a 3x5 bitmap font: each glyph is 5 rows of 3 dots, '#' set.
var glyphs = map[rune]string{
	'0': "####.##.##.####", '1': ".#.##..#..#.###", '2': "###..#####..###", '3': "###..####..####",
	'4': "#.##.####..#..#", '5': "####..###..####", '6': "####..####.####", '7': "###..#..#..#..#",
	'8': "####.#####.####", '9': "####.####..####",
	'A': ".#.#.#####.##.#", 'B': "##.#.###.#.###.", 'C': "####..#..#..###", 'D': "##.#.##.##.###.",
	'E': "####..####..###", 'F': "####..##.#..#..", 'G': "####..#.##.####", 'H': "#.##.#####.##.#",
	'I': "###.#..#..#.###", 'J': "..#..#..##.####", 'K': "#.##.###.#.##.#", 'L': "#..#..#..#..###",
	'M': "#.#####.##.##.#", 'N': "##.#.##.##.##.#", 'O': "####.##.##.####", 'P': "####.#####..#..",
	'Q': "####.##.####..#", 'R': "####.###.#.##.#", 'S': "####..###..####", 'T': "###.#..#..#..#.",
	'U': "#.##.##.##.####", 'V': "#.##.##.##.#.#.", 'W': "#.##.##.#####.#", 'X': "#.##.#.#.#.##.#",
	'Y': "#.##.#.#..#..#.", 'Z': "###..#.#.#..###",
	'.': "............#..", ':': "....#.....#....", '-': "......###......", '/': "..#..#.#.#..#..",
	'(': ".#.#..#..#...#.", ')': ".#...#..#..#.#.", '%': "#.#..#.#.#..#.#", ',': "..........#.#..",
	' ': "...............", '=': "...###...###...", '+': "....#.###.#....",
}

const glyphW, glyphH = 3, 5

func textWidth(s string) int { return len([]rune(s)) * (glyphW + 1) * chartScale }

// drawText draws s with its top left corner at (x, y); unknown runes are
// left blank.
func drawText(img draw.Image, x, y int, s string, c color.Color) {
	for _, r := range s {
		g := glyphs[r]
		for i := 0; i < len(g) && i < glyphW*glyphH; i++ {
			if g[i] != '#' {
				continue
			}
			gx, gy := x+(i%glyphW)*chartScale, y+(i/glyphW)*chartScale
			fillRect(img, image.Rect(gx, gy, gx+chartScale, gy+chartScale), c)
		}
		x += (glyphW + 1) * chartScale
	}
}

// The chart decodes as a PNG of the expected size, every glyph of the font
// is 15 dots, and every series is drawn in its colour.
func TestSoakChartDrawsEverySeries(t *testing.T) {
	for r, g := range glyphs {
		if len(g) != glyphW*glyphH {
			t.Errorf("glyph %q has %d dots, want %d", r, len(g), glyphW*glyphH)
		}
	}
	var series []chartSeries
	for i := range 4 {
		s := chartSeries{name: fmt.Sprintf("node%d", i+1)}
		for x := range 50 {
			y := float64(10*i + x%7)
			if i == 1 && x > 20 && x < 25 {
				y = math.NaN() // down
			}
			s.points = append(s.points, chartPoint{float64(x * 3), y})
		}
		series = append(series, s)
	}
	panels := []chartPanel{
		{title: "RSS (MIB)", series: series, marks: []chartMark{{30, 1}}},
		{title: "DATA DIR (MIB)", series: series, hline: 40},
	}
	b, err := drawChart(panels, "SECONDS")
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds(); got.Dx() != chartWidth || got.Dy() != 2*panelHeight {
		t.Errorf("chart is %v, want %dx%d", got, chartWidth, 2*panelHeight)
	}
	seen := map[color.RGBA]int{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}]++
		}
	}
	for i := range series {
		if seen[seriesColors[i]] < 100 {
			t.Errorf("series %d's colour has %d pixels, want its line", i, seen[seriesColors[i]])
		}
	}
}
